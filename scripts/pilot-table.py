#!/usr/bin/env python3
"""The fine-tuning pilot table of docs/results/README.md from docs/results/finetune-pilot/*.csv (l = 6, N = 500):
FD and class accuracy at the step counts each file holds, one row per file in the order given.

    scripts/pilot-table.py docs/results/finetune-pilot base-ema ctl100-ema ft100-ema ft300-ema ft400-ema ft2-100-ema
"""
import csv,os,sys
if len(sys.argv)<3: sys.exit(__doc__)
d=sys.argv[1]
rows={n:{int(r['steps']):r for r in csv.DictReader(open(os.path.join(d,n+'.csv'))) if r['length']=='6'} for n in sys.argv[2:]}
steps=sorted({t for r in rows.values() for t in r})
print('| model | '+' | '.join(f'FD T={t}' for t in steps)+' | '+' | '.join(f'acc T={t}' for t in steps)+' |')
print('|---|'+'---|'*(2*len(steps)))
for n,r in rows.items():
    fd=['%.2f'%float(r[t]['fd']) if t in r else '–' for t in steps]
    acc=['%.1f%%'%(100*float(r[t]['accuracy'])) if t in r else '–' for t in steps]
    print(f'| {n} | '+' | '.join(fd)+' | '+' | '.join(acc)+' |')
