//! What a run executes, and in which order it may: a pure function of the validated plan and
//! of which of its nodes the cache already holds.

use std::collections::VecDeque;

use crate::validate::{Plan, PlanInput};

/// The nodes of a plan that must run and the links among them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Schedule {
    /// Per plan node: whether it runs (an output needs it and it is not served from cache).
    pub execute: Vec<bool>,
    /// Per plan node that runs: how many of its links come from nodes that run and have not
    /// finished yet (a source linked twice counts twice).
    pub pending: Vec<usize>,
    /// Per plan node: the nodes that run and take one of its outputs, once per link.
    pub dependents: Vec<Vec<usize>>,
}

fn links(plan: &Plan, i: usize) -> impl Iterator<Item = usize> + '_ {
    plan.nodes[i]
        .inputs
        .iter()
        .filter_map(|(_, input)| match input {
            PlanInput::Link { node, .. } => Some(*node),
            PlanInput::Literal(..) => None,
        })
}

/// Plans a run of `plan` where `cached[i]` tells whether node `i`'s outputs are cached.
/// Walks back from the outputs: a node runs when it is needed and not cached; the inputs of
/// a cached node are not needed.
pub(crate) fn schedule(plan: &Plan, cached: &[bool]) -> Schedule {
    let n = plan.nodes.len();
    assert_eq!(cached.len(), n, "one cache flag per plan node");
    let mut execute = vec![false; n];
    let mut visited = vec![false; n];
    let mut stack: Vec<usize> = plan.outputs.clone();
    while let Some(i) = stack.pop() {
        if std::mem::replace(&mut visited[i], true) || cached[i] {
            continue;
        }
        execute[i] = true;
        stack.extend(links(plan, i));
    }
    let mut pending = vec![0usize; n];
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
    for i in (0..n).filter(|&i| execute[i]) {
        for src in links(plan, i) {
            if execute[src] {
                pending[i] += 1;
                dependents[src].push(i);
            }
        }
    }
    Schedule {
        execute,
        pending,
        dependents,
    }
}

impl Schedule {
    /// How many nodes run.
    pub fn to_execute(&self) -> usize {
        self.execute.iter().filter(|&&e| e).count()
    }

    /// The nodes that can start at once (they run and wait for nothing), in plan order.
    pub fn initially_ready(&self) -> VecDeque<usize> {
        (0..self.execute.len())
            .filter(|&i| self.execute[i] && self.pending[i] == 0)
            .collect()
    }

    /// Node `i` finished: its dependents wait for one link less each; those that now wait
    /// for nothing are appended to `ready`.
    pub fn release(&mut self, i: usize, ready: &mut VecDeque<usize>) {
        for &u in &self.dependents[i] {
            self.pending[u] -= 1;
            if self.pending[u] == 0 {
                ready.push_back(u);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use odelt_contract::{NodeInfo, Value};
    use serde_json::{json, Map};

    use super::*;
    use crate::validate::PlanNode;

    /// A plan whose node `i` links to the nodes in `inputs[i]` (node ids are indices).
    fn plan(inputs: &[&[usize]], outputs: &[usize]) -> Plan {
        let nodes = inputs
            .iter()
            .enumerate()
            .map(|(i, srcs)| {
                let mut ins: Vec<(String, PlanInput)> = srcs
                    .iter()
                    .enumerate()
                    .map(|(k, &node)| {
                        let link = PlanInput::Link {
                            node,
                            output: 0,
                            to_float: false,
                        };
                        (format!("in{k}"), link)
                    })
                    .collect();
                ins.push(("seed".into(), PlanInput::Literal(Value::Int(1), json!(1))));
                PlanNode {
                    id: i.to_string(),
                    class_type: "Node".into(),
                    title: None,
                    plugin: 0,
                    info: Arc::new(NodeInfo::new("Node")),
                    inputs: ins,
                }
            })
            .collect();
        Plan {
            nodes,
            outputs: outputs.to_vec(),
            node_errors: Map::new(),
        }
    }

    /// Runs the schedule to the end one ready node at a time; returns the order.
    fn drain(mut s: Schedule) -> Vec<usize> {
        let mut ready = s.initially_ready();
        let mut order = Vec::new();
        while let Some(i) = ready.pop_front() {
            order.push(i);
            s.release(i, &mut ready);
        }
        order
    }

    #[test]
    fn nothing_cached_runs_everything_dependencies_first() {
        // 0 → 1 → 3, 0 → 2 → 3 (a diamond), 3 the output.
        let p = plan(&[&[], &[0], &[0], &[1, 2]], &[3]);
        let s = schedule(&p, &[false; 4]);
        assert_eq!(s.execute, vec![true; 4]);
        assert_eq!(s.pending, vec![0, 1, 1, 2]);
        assert_eq!(s.dependents, vec![vec![1, 2], vec![3], vec![3], vec![]]);
        assert_eq!(s.to_execute(), 4);
        assert_eq!(s.initially_ready(), VecDeque::from([0]));
        assert_eq!(drain(s), vec![0, 1, 2, 3]);
    }

    #[test]
    fn a_cached_node_cuts_off_its_inputs() {
        // 0 → 1 → 2 (output); 1 cached: 0 is not needed, 2 waits for nothing.
        let p = plan(&[&[], &[0], &[1]], &[2]);
        let s = schedule(&p, &[false, true, false]);
        assert_eq!(s.execute, vec![false, false, true]);
        assert_eq!(s.pending, vec![0, 0, 0]);
        assert_eq!(s.initially_ready(), VecDeque::from([2]));
        assert_eq!(s.to_execute(), 1);
    }

    #[test]
    fn a_cached_output_runs_nothing() {
        let p = plan(&[&[], &[0]], &[1]);
        let s = schedule(&p, &[false, true]);
        assert_eq!(s.to_execute(), 0);
        assert!(s.initially_ready().is_empty());
        assert!(drain(s).is_empty());
    }

    #[test]
    fn a_node_still_needed_by_another_path_runs() {
        // 0 → 1 (cached) → 3 and 0 → 2 → 3: 0 still runs for 2.
        let p = plan(&[&[], &[0], &[0], &[1, 2]], &[3]);
        let s = schedule(&p, &[false, true, false, false]);
        assert_eq!(s.execute, vec![true, false, true, true]);
        assert_eq!(s.pending, vec![0, 0, 1, 1]);
        assert_eq!(s.dependents[0], vec![2]);
        assert!(s.dependents[1].is_empty());
        assert_eq!(drain(s), vec![0, 2, 3]);
    }

    #[test]
    fn a_source_linked_twice_counts_twice() {
        // 1 takes two outputs of 0.
        let p = plan(&[&[], &[0, 0]], &[1]);
        let mut s = schedule(&p, &[false, false]);
        assert_eq!(s.pending, vec![0, 2]);
        assert_eq!(s.dependents[0], vec![1, 1]);
        let mut ready = VecDeque::new();
        s.release(0, &mut ready);
        assert_eq!(ready, VecDeque::from([1]), "ready once, after both links");
    }

    #[test]
    fn several_outputs_share_their_dependencies() {
        // 0 → 1 (output), 0 → 2 (output), 3 alone (output), 4 unused by the outputs.
        let p = plan(&[&[], &[0], &[0], &[], &[0]], &[1, 2, 3]);
        let s = schedule(&p, &[false; 5]);
        assert_eq!(s.execute, vec![true, true, true, true, false]);
        assert_eq!(
            s.dependents[0],
            vec![1, 2],
            "the unused node is no dependent"
        );
        assert_eq!(s.initially_ready(), VecDeque::from([0, 3]));
        assert_eq!(drain(s), vec![0, 3, 1, 2]);
    }
}
