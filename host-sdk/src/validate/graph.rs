//! Graph walks over the prompt's dependency lists (`deps[i]`: the nodes node `i` reads from), all iterative.

use std::collections::VecDeque;

/// Kahn's algorithm over the reachable nodes, ties broken by prompt order.
pub(super) fn kahn(deps: &[Vec<usize>], include: &[bool]) -> Vec<usize> {
    let n = deps.len();
    let mut indeg = vec![0usize; n];
    let mut users: Vec<Vec<usize>> = vec![Vec::new(); n];
    for i in 0..n {
        if include[i] {
            for &d in &deps[i] {
                indeg[i] += 1;
                users[d].push(i);
            }
        }
    }
    let mut q: VecDeque<usize> = (0..n).filter(|&i| include[i] && indeg[i] == 0).collect();
    let mut order = Vec::new();
    while let Some(i) = q.pop_front() {
        order.push(i);
        for &u in &users[i] {
            indeg[u] -= 1;
            if indeg[u] == 0 {
                q.push_back(u);
            }
        }
    }
    order
}

/// Removes from `set` the nodes that only lead out of cycles: repeatedly drops nodes that
/// no other node of the set uses. What stays is on a cycle (or between two).
pub(super) fn peel_sinks(deps: &[Vec<usize>], set: &mut [bool]) {
    let n = deps.len();
    let mut used_by = vec![0usize; n];
    for i in (0..n).filter(|&i| set[i]) {
        for &d in &deps[i] {
            if set[d] {
                used_by[d] += 1;
            }
        }
    }
    let mut q: Vec<usize> = (0..n).filter(|&i| set[i] && used_by[i] == 0).collect();
    while let Some(i) = q.pop() {
        set[i] = false;
        for &d in &deps[i] {
            if set[d] {
                used_by[d] -= 1;
                if used_by[d] == 0 {
                    q.push(d);
                }
            }
        }
    }
}

/// `start` and everything it depends on.
pub(super) fn upstream(deps: &[Vec<usize>], start: usize) -> Vec<usize> {
    let mut seen = vec![false; deps.len()];
    let mut out = Vec::new();
    let mut stack = vec![start];
    while let Some(i) = stack.pop() {
        if !std::mem::replace(&mut seen[i], true) {
            out.push(i);
            stack.extend(deps[i].iter().copied().filter(|&d| !seen[d]));
        }
    }
    out
}
