//! Graph questions about steps: order, cycles, and who depends on whom.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

/// Order `nodes` so every node comes after what it needs (stable: among
/// nodes that are ready together, the given order wins). On a cycle, returns
/// the cycle as a list of ids whose last element equals the first. Ids may
/// be borrowed (`&str`): ordering a plan need not copy them.
pub fn topo_order<S: AsRef<str>>(nodes: &[(S, Vec<S>)]) -> Result<Vec<usize>, Vec<String>> {
    let index: HashMap<&str, usize> = nodes.iter().enumerate().map(|(i, (id, _))| (id.as_ref(), i)).collect();
    let mut waiting = vec![0usize; nodes.len()];
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    for (i, (_, needs)) in nodes.iter().enumerate() {
        for n in needs {
            if let Some(&j) = index.get(n.as_ref()) {
                waiting[i] += 1;
                dependents[j].push(i);
            }
        }
    }
    // A min-ordered ready set keeps the result deterministic and close to
    // the order in which components declared their steps.
    let mut ready: BTreeSet<usize> = (0..nodes.len()).filter(|&i| waiting[i] == 0).collect();
    let mut order = Vec::with_capacity(nodes.len());
    while let Some(i) = ready.pop_first() {
        order.push(i);
        for &d in &dependents[i] {
            waiting[d] -= 1;
            if waiting[d] == 0 {
                ready.insert(d);
            }
        }
    }
    if order.len() == nodes.len() {
        return Ok(order);
    }
    Err(find_cycle(nodes, &index, &waiting))
}

fn find_cycle<S: AsRef<str>>(nodes: &[(S, Vec<S>)], index: &HashMap<&str, usize>, waiting: &[usize]) -> Vec<String> {
    // Every node still waiting sits on or behind a cycle: walk "needs" edges
    // among them until a node repeats.
    let start = waiting.iter().position(|&w| w > 0).unwrap_or(0);
    let mut seen: BTreeMap<usize, usize> = BTreeMap::new();
    let mut path = Vec::new();
    let mut cur = start;
    let id = |i: usize| nodes[i].0.as_ref().to_string();
    loop {
        if let Some(&pos) = seen.get(&cur) {
            let mut cycle: Vec<String> = path[pos..].iter().map(|&i: &usize| id(i)).collect();
            cycle.push(id(cur));
            return cycle;
        }
        seen.insert(cur, path.len());
        path.push(cur);
        let next = nodes[cur]
            .1
            .iter()
            .filter_map(|n| index.get(n.as_ref()).copied())
            .find(|&j| waiting[j] > 0);
        match next {
            Some(j) => cur = j,
            None => return path.iter().map(|&i| id(i)).collect(),
        }
    }
}

/// Everything that transitively needs any of `roots` (roots excluded).
pub fn dependents_of(nodes: &[(String, Vec<String>)], roots: &BTreeSet<String>) -> BTreeSet<String> {
    let mut rev: HashMap<&str, Vec<&str>> = HashMap::new();
    for (id, needs) in nodes {
        for n in needs {
            rev.entry(n.as_str()).or_default().push(id.as_str());
        }
    }
    walk(roots, |id| rev.get(id).cloned().unwrap_or_default())
}

/// Everything any of `roots` transitively needs (roots excluded).
pub fn needs_of(nodes: &[(String, Vec<String>)], roots: &BTreeSet<String>) -> BTreeSet<String> {
    let fwd: HashMap<&str, Vec<&str>> = nodes
        .iter()
        .map(|(id, needs)| (id.as_str(), needs.iter().map(String::as_str).collect()))
        .collect();
    walk(roots, |id| fwd.get(id).cloned().unwrap_or_default())
}

fn walk<'a>(roots: &BTreeSet<String>, next: impl Fn(&str) -> Vec<&'a str>) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut queue: VecDeque<String> = roots.iter().cloned().collect();
    while let Some(id) = queue.pop_front() {
        for n in next(&id) {
            if !roots.contains(n) && found.insert(n.to_string()) {
                queue.push_back(n.to_string());
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(spec: &[(&str, &[&str])]) -> Vec<(String, Vec<String>)> {
        spec.iter()
            .map(|(id, needs)| (id.to_string(), needs.iter().map(|s| s.to_string()).collect()))
            .collect()
    }

    #[test]
    fn orders_needs_first_and_keeps_declaration_order() {
        let n = nodes(&[("c", &["a"]), ("a", &[]), ("b", &[]), ("d", &["c", "b"])]);
        let order: Vec<&str> = topo_order(&n).unwrap().iter().map(|&i| n[i].0.as_str()).collect();
        // c becomes ready as soon as a is done and, being declared first, goes before b.
        assert_eq!(order, vec!["a", "c", "b", "d"]);
    }

    #[test]
    fn names_the_cycle() {
        let n = nodes(&[("x", &[]), ("a", &["c"]), ("b", &["a"]), ("c", &["b"]), ("d", &["a"])]);
        let cycle = topo_order(&n).unwrap_err();
        assert_eq!(cycle.first(), cycle.last());
        assert_eq!(cycle.len(), 4, "{cycle:?}");
        for id in ["a", "b", "c"] {
            assert!(cycle.contains(&id.to_string()));
        }
    }

    #[test]
    fn closures() {
        let n = nodes(&[("a", &[]), ("b", &["a"]), ("c", &["b"]), ("d", &[])]);
        let roots: BTreeSet<String> = ["b".to_string()].into();
        assert_eq!(dependents_of(&n, &roots), ["c".to_string()].into());
        assert_eq!(needs_of(&n, &roots), ["a".to_string()].into());
    }
}
