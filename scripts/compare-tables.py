#!/usr/bin/env python3
"""FD of two `odelt-model eval`/`report` CSVs side by side for every (T, l), and each one's T = 1 / best-FD ratio
per length (the base-vs-fine-tuned table of docs/results/README.md).

    scripts/compare-tables.py docs/results/base/fashion-dit.csv docs/results/fashion-dit.csv base fine-tuned
"""
import csv,sys
if len(sys.argv)!=5: sys.exit(__doc__)
a,b,na,nb=sys.argv[1:]
def load(p):
    return {(int(r['steps']),int(r['length'])):r for r in csv.DictReader(open(p))}
A,B=load(a),load(b)
keys=sorted(set(A)&set(B), key=lambda k:(-k[1],k[0]))
print(f'| l | T | FD {na} | FD {nb} | change | acc {na} | acc {nb} |')
print('|---|---|---|---|---|---|---|')
for k in keys:
    fa,fb=float(A[k]['fd']),float(B[k]['fd'])
    print('| %d | %d | %.2f | %.2f | %+.0f%% | %.1f%% | %.1f%% |'%(k[1],k[0],fa,fb,100*(fb/fa-1),100*float(A[k]['accuracy']),100*float(B[k]['accuracy'])))
print()
print(f'| l | T=1 / best FD, {na} | T=1 / best FD, {nb} |')
print('|---|---|---|')
for l in sorted({k[1] for k in keys}, reverse=True):
    out=[]
    for D in (A,B):
        fds={k[0]:float(D[k]['fd']) for k in keys if k[1]==l}
        best=min(fds.values()); bt=min(fds,key=fds.get)
        out.append('%.2fx (%.1f / %.1f at T = %d)'%(fds[1]/best,fds[1],best,bt))
    print('| %d | %s | %s |'%(l,out[0],out[1]))
