#!/usr/bin/env python3
"""Summary of an `odelt-model train` log.csv: means of the loss terms over fixed step windows and the median
seconds per step of each leg (the tables in models/TRAINING.md and docs/benchmarks.md).

    scripts/log-summary.py models/fashion-dit-base-train-log.csv
    scripts/log-summary.py models/fashion-dit-finetune-log.csv --windows 1-50,51-100,251-300,551-600,651-700

With --windows the log is one leg (a fine-tuning run) summarised over the given step windows.
"""
import csv,statistics as st,sys
custom=None
if len(sys.argv)==4 and sys.argv[2]=='--windows':
    custom=[tuple(int(x) for x in w.split('-')) for w in sys.argv[3].split(',')]
elif len(sys.argv)!=2:
    sys.exit(__doc__)
rows={}
for r in csv.DictReader(open(sys.argv[1])):
    rows[int(r['step'])]=r
steps=sorted(rows)
assert steps==list(range(1,steps[-1]+1)), "gaps in log"
def avg(key,a,b):
    v=[float(rows[s][key]) for s in range(a,b+1) if rows[s][key] not in ('NaN','nan')]
    return st.mean(v) if v else float('nan')
print("| steps | leg | lr at end | loss (all rows) | flow matching | time consistency | length consistency |")
print("|---|---|---|---|---|---|---|")
last=steps[-1]
# the legs of the default model's run (models/TRAINING.md); shorter logs (the ablations) end in leg 1
def leg(step):
    if custom: return 'fine-tune'
    return '1 GPU' if step <= 3000 else '2 GPU' if step <= 6500 else '3 CPU'
windows=custom or [(1,50),(451,500),(951,1000),(2651,2700),(2951,3000),(3451,3500),(4951,5000),(6451,6500),(6951,7000),(last-49,last)]
for a,b in dict.fromkeys(w for w in windows if w[1]<=last):
    print("| %d–%d | %s | %s | %.4f | %.4f | %.4f | %.4f |"%(a,b,leg(b),rows[b]['lr'],avg('loss',a,b),avg('flow',a,b),avg('time',a,b),avg('length',a,b)))
legs=[('fine-tune',12,last)] if custom else [('leg 1',12,3000),('leg 2',3012,6500),('leg 3',6501,last)]
for name,a,b in legs:
    v=[float(rows[s]['sec_per_step']) for s in range(a,min(b,last)+1)]
    if v: print(f"{name}: median {st.median(v):.3f} s/step, total {sum(v):.0f} s over {len(v)} steps")
