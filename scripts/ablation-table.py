#!/usr/bin/env python3
"""The ablation comparison table of docs/results/README.md from the three `odelt-model eval` JSON files
(ablation3000/{main,nolen,notime}-step3000.json); bold = lowest FD per row.

    scripts/ablation-table.py docs/results/ablation3000
"""
import json,sys
import os
base=sys.argv[1] if len(sys.argv)>1 else 'docs/results/ablation3000/'
base=os.path.join(base,'')
runs={'main':'full','nolen':'no length-cons.','notime':'no time-cons.'}
d={k:{(r['steps'],r['length']):r for r in json.load(open(base+f'{k}-step3000.json'))['rows']} for k in runs}
keys=sorted(d['main'].keys(), key=lambda x:(x[0],-x[1]))
print('| T | l | N | FD full | FD no-length | FD no-time | acc full | acc no-length | acc no-time |')
print('|---|---|---|---|---|---|---|---|---|')
for k in keys:
    fds=[d[r][k]['fd'] for r in runs]
    best=min(fds)
    f=['**%.1f**'%x if x==best else '%.1f'%x for x in fds]
    acc=['%.1f%%'%(100*d[r][k]['accuracy']) for r in runs]
    print('| %d | %d | %d | %s | %s |'%(k[0],k[1],d['main'][k]['n'],' | '.join(f),' | '.join(acc)))
