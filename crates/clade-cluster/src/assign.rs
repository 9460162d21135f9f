//! Which node holds which shard: a pluggable [`Assignment`], computed by every node's keeper
//! from the same view of the cluster (the nodes heard, who holds what, each shard's load as
//! its holder announced it), so the nodes agree without talking it over. A node acts only on
//! its own part: it hands over what is no longer its share and takes what comes free.
//!
//! Two strategies: [`EvenSpread`] (every `n`-th shard to each of `n` nodes, whatever runs in
//! them) and [`BinPack`] (the shards' load balanced over the nodes; shards move only when the
//! nodes are out of balance by more than a margin, so noise in the load moves nothing).

use std::collections::{BTreeMap, HashMap};

/// What every node knows of the cluster when it assigns the shards.
#[derive(Debug, Clone, Copy)]
pub struct View<'a> {
    /// The live nodes, in name order.
    pub members: &'a [String],
    /// How many shards there are.
    pub shards: u32,
    /// Who holds each shard, as the holders announced it.
    pub holders: &'a HashMap<u32, String>,
    /// Each shard's load, in turns a minute (recent, decayed), as its holder announced it.
    pub load: &'a HashMap<u32, f64>,
}

/// A way to spread the shards over the nodes. It must be a pure function of the view: every
/// node computes it alike and acts on its own part.
pub trait Assignment: std::fmt::Debug + Send + Sync {
    /// Each member's shards, in the order of `view.members`, every shard exactly once.
    fn assign(&self, view: &View<'_>) -> Vec<Vec<u32>>;

    /// Its name, as configuration writes it.
    fn name(&self) -> &'static str;
}

/// Every `n`-th shard to each of the `n` nodes: shard `s` to the `s mod n`-th in name order.
#[derive(Debug, Clone, Copy, Default)]
pub struct EvenSpread;

impl Assignment for EvenSpread {
    fn assign(&self, view: &View<'_>) -> Vec<Vec<u32>> {
        let count = view.members.len().max(1);
        let mut shares = vec![Vec::new(); count];
        for shard in 0..view.shards {
            shares[shard as usize % count].push(shard);
        }
        shares
    }

    fn name(&self) -> &'static str {
        "even"
    }
}

/// The shards' load balanced over the nodes. Each shard weighs its load plus one (an idle
/// shard still counts, so idle shards spread by number). Shards a live node holds stay there;
/// the others go, heaviest first, to the lightest node. Then, if the heaviest and lightest
/// nodes differ by more than the margin, shards move from the heaviest to the lightest (the
/// one that evens the pair best, each time) until no move narrows the gap.
#[derive(Debug, Clone, Copy)]
pub struct BinPack {
    /// How far apart the heaviest and lightest nodes may be before shards move, as a share of
    /// the mean node's weight.
    pub margin: f64,
}

impl Default for BinPack {
    fn default() -> Self {
        Self { margin: 0.1 }
    }
}

/// What an idle shard weighs, in turns a minute.
const IDLE_WEIGHT: f64 = 1.0;

impl Assignment for BinPack {
    fn assign(&self, view: &View<'_>) -> Vec<Vec<u32>> {
        let count = view.members.len();
        if count == 0 {
            return Vec::new();
        }
        let weight =
            |shard: u32| view.load.get(&shard).copied().unwrap_or(0.0).max(0.0) + IDLE_WEIGHT;
        let place: HashMap<&str, usize> =
            view.members.iter().enumerate().map(|(i, m)| (m.as_str(), i)).collect();
        // Each member's shards, by shard (ordered, so every node iterates alike).
        let mut shares: Vec<BTreeMap<u32, f64>> = vec![BTreeMap::new(); count];
        let mut orphans = Vec::new();
        for shard in 0..view.shards {
            match view.holders.get(&shard).and_then(|holder| place.get(holder.as_str())) {
                Some(&member) => {
                    shares[member].insert(shard, weight(shard));
                }
                None => orphans.push(shard),
            }
        }
        let total = |share: &BTreeMap<u32, f64>| share.values().sum::<f64>();
        orphans.sort_by(|a, b| weight(*b).total_cmp(&weight(*a)).then(a.cmp(b)));
        for shard in orphans {
            let lightest = lightest(&shares, total);
            shares[lightest].insert(shard, weight(shard));
        }
        // Balanced within the margin: nothing moves, so noise in the load moves nothing.
        let mean = shares.iter().map(total).sum::<f64>() / count as f64;
        let gap_of = |shares: &[BTreeMap<u32, f64>]| {
            total(&shares[heaviest(shares, total)]) - total(&shares[lightest(shares, total)])
        };
        if gap_of(&shares) <= (self.margin * mean).max(2.0 * IDLE_WEIGHT) {
            return shares.into_iter().map(|share| share.into_keys().collect()).collect();
        }
        // Out of balance: as even as moves can make it. Each move lowers the sum of the
        // squared weights, so the loop ends; the bound is for safety.
        for _ in 0..view.shards as usize * count {
            let (heavy, light) = (heaviest(&shares, total), lightest(&shares, total));
            let gap = total(&shares[heavy]) - total(&shares[light]);
            if gap <= IDLE_WEIGHT {
                break;
            }
            let best = shares[heavy]
                .iter()
                .map(|(shard, w)| (*shard, *w, (gap - 2.0 * w).abs()))
                .filter(|(_, _, left)| *left < gap)
                .min_by(|a, b| a.2.total_cmp(&b.2).then(a.0.cmp(&b.0)));
            let Some((shard, w, _)) = best else { break };
            shares[heavy].remove(&shard);
            shares[light].insert(shard, w);
        }
        shares.into_iter().map(|share| share.into_keys().collect()).collect()
    }

    fn name(&self) -> &'static str {
        "bin_pack"
    }
}

/// The member with the least weight (the first in name order among equals).
fn lightest(shares: &[BTreeMap<u32, f64>], total: impl Fn(&BTreeMap<u32, f64>) -> f64) -> usize {
    let weights = shares.iter().map(total).enumerate();
    weights.min_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0))).map_or(0, |(i, _)| i)
}

/// The member with the most weight (the first in name order among equals).
fn heaviest(shares: &[BTreeMap<u32, f64>], total: impl Fn(&BTreeMap<u32, f64>) -> f64) -> usize {
    let weights = shares.iter().map(total).enumerate();
    weights.min_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))).map_or(0, |(i, _)| i)
}

/// A shard's load, in turns a minute: the signals to run its sessions, decayed over about a
/// minute, plus the executions its sessions have open (branches, workers, sub-agent runs),
/// each weighing [`OPEN_EXECUTION_WEIGHT`], as last counted.
#[derive(Debug, Default)]
pub(crate) struct Loads {
    by_shard: HashMap<u32, f64>,
    open: HashMap<u32, u32>,
}

/// What an execution left open in a shard weighs, in turns a minute: it runs turns of its own
/// while open (a worker's steps, a branch's thinking), which its session's signals do not
/// count until they come.
pub(crate) const OPEN_EXECUTION_WEIGHT: f64 = 1.0;

/// Over how long a shard's load is averaged.
const LOAD_WINDOW_SECS: f64 = 60.0;

/// Below this a shard's load is forgotten.
const LOAD_FLOOR: f64 = 0.05;

impl Loads {
    /// Adds one tick's `counts` (signals by shard, over `tick_secs`) to the shards `held`,
    /// forgetting the shards no longer held.
    pub(crate) fn add(&mut self, counts: &HashMap<u32, u64>, tick_secs: f64, held: &[u32]) {
        let decay = (-tick_secs / LOAD_WINDOW_SECS).exp();
        self.by_shard.retain(|shard, _| held.contains(shard));
        self.open.retain(|shard, _| held.contains(shard));
        for shard in held {
            let count = counts.get(shard).copied().unwrap_or(0) as f64;
            let load = self.by_shard.entry(*shard).or_default();
            *load = *load * decay + count * 60.0 / LOAD_WINDOW_SECS;
        }
        self.by_shard.retain(|_, load| *load >= LOAD_FLOOR);
    }

    /// Starts `shard`'s load where its last holder left it: a shard handed over does not
    /// look idle to the others until its load builds up again.
    pub(crate) fn seed(&mut self, shard: u32, load: f64) {
        if load >= LOAD_FLOOR {
            self.by_shard.insert(shard, load);
        }
    }

    /// Sets the executions open in each shard held, as counted now.
    pub(crate) fn set_open(&mut self, open: HashMap<u32, u32>) {
        self.open = open;
    }

    /// The loads, rounded to a tenth, as the node announces them.
    pub(crate) fn announced(&self) -> BTreeMap<u32, f64> {
        let mut loads: BTreeMap<u32, f64> =
            self.by_shard.iter().map(|(shard, load)| (*shard, *load)).collect();
        for (shard, open) in &self.open {
            *loads.entry(*shard).or_default() += f64::from(*open) * OPEN_EXECUTION_WEIGHT;
        }
        loads.into_iter().map(|(shard, load)| (shard, (load * 10.0).round() / 10.0)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    fn held(pairs: &[(u32, &str)]) -> HashMap<u32, String> {
        pairs.iter().map(|(s, n)| (*s, (*n).to_owned())).collect()
    }

    #[test]
    fn open_executions_weigh_in_a_held_shards_load_and_leave_with_it() {
        let mut loads = Loads::default();
        loads.add(&HashMap::from([(1, 6)]), 6.0, &[1, 2, 3]);
        let turns = loads.announced()[&1];
        loads.set_open(HashMap::from([(1, 2), (3, 4)]));
        let announced = loads.announced();
        assert_eq!(announced[&1], turns + 2.0 * OPEN_EXECUTION_WEIGHT, "{announced:?}");
        assert_eq!(announced[&3], 4.0 * OPEN_EXECUTION_WEIGHT, "an idle shard with open work");
        assert!(!announced.contains_key(&2), "an idle shard with nothing open weighs nothing");
        // Shard 3 handed over: its open executions are the new holder's to count.
        loads.add(&HashMap::new(), 6.0, &[1, 2]);
        assert!(!loads.announced().contains_key(&3), "{:?}", loads.announced());
    }

    fn weights(shares: &[Vec<u32>], load: &HashMap<u32, f64>) -> Vec<f64> {
        let w = |s: &u32| load.get(s).copied().unwrap_or(0.0) + IDLE_WEIGHT;
        shares.iter().map(|share| share.iter().map(w).sum()).collect()
    }

    fn every_shard_once(shares: &[Vec<u32>], shards: u32) {
        let mut all: Vec<u32> = shares.iter().flatten().copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..shards).collect::<Vec<_>>(), "{shares:?}");
    }

    #[test]
    fn even_spread_gives_every_nth_shard() {
        let members = members(&["a", "b", "c"]);
        let (holders, load) = (HashMap::new(), HashMap::new());
        let view = View { members: &members, shards: 7, holders: &holders, load: &load };
        assert_eq!(EvenSpread.assign(&view), vec![vec![0, 3, 6], vec![1, 4], vec![2, 5]]);
    }

    #[test]
    fn two_hot_shards_on_one_node_are_split_when_a_second_joins() {
        let members = members(&["a", "b"]);
        let holders = held(&[(0, "a"), (1, "a"), (2, "a"), (3, "a")]);
        let load = HashMap::from([(0, 100.0), (2, 90.0)]);
        let view = View { members: &members, shards: 4, holders: &holders, load: &load };
        let shares = BinPack::default().assign(&view);
        every_shard_once(&shares, 4);
        let hot_on = |s: u32| shares.iter().position(|share| share.contains(&s));
        assert_ne!(hot_on(0), hot_on(2), "{shares:?}");
        // Even spread puts both on the first node: the strategy is what splits them.
        let even = EvenSpread.assign(&view);
        assert!(even[0].contains(&0) && even[0].contains(&2), "{even:?}");
    }

    #[test]
    fn idle_shards_spread_by_number_and_a_newcomer_gets_its_part() {
        let members = members(&["a", "b", "c"]);
        let holders: HashMap<u32, String> =
            (0..256).map(|s| (s, if s % 2 == 0 { "a" } else { "b" }.to_owned())).collect();
        let load = HashMap::new();
        let view = View { members: &members, shards: 256, holders: &holders, load: &load };
        let shares = BinPack::default().assign(&view);
        every_shard_once(&shares, 256);
        let counts: Vec<usize> = shares.iter().map(Vec::len).collect();
        assert!(counts.iter().all(|n| (84..=87).contains(n)), "{counts:?}");
    }

    #[test]
    fn a_balanced_cluster_moves_nothing_for_noise() {
        let members = members(&["a", "b"]);
        let holders = held(&[(0, "a"), (1, "a"), (2, "b"), (3, "b")]);
        // b is 8 % heavier: within the margin.
        let load = HashMap::from([(0, 50.0), (1, 50.0), (2, 54.0), (3, 54.0)]);
        let view = View { members: &members, shards: 4, holders: &holders, load: &load };
        assert_eq!(BinPack::default().assign(&view), vec![vec![0, 1], vec![2, 3]]);
    }

    #[test]
    fn a_dead_nodes_shards_go_heaviest_first_to_the_lightest() {
        let members = members(&["a", "b"]);
        // c held 4 and 5 and is gone.
        let holders = held(&[(0, "a"), (1, "b"), (2, "b"), (3, "a"), (4, "c"), (5, "c")]);
        let load = HashMap::from([(0, 30.0), (1, 10.0), (2, 10.0), (4, 25.0), (5, 5.0)]);
        let view = View { members: &members, shards: 6, holders: &holders, load: &load };
        let shares = BinPack::default().assign(&view);
        every_shard_once(&shares, 6);
        let totals = weights(&shares, &load);
        let gap = (totals[0] - totals[1]).abs();
        assert!(gap <= 12.0, "{shares:?} weigh {totals:?}");
    }

    #[test]
    fn every_node_computes_the_same_assignment_whatever_the_maps_order() {
        let members = members(&["n0", "n1", "n2"]);
        let mut holders = HashMap::new();
        let mut load = HashMap::new();
        for s in 0..64u32 {
            holders.insert(s, format!("n{}", s % 4));
            load.insert(s, f64::from((s * 37) % 11));
        }
        let view = View { members: &members, shards: 64, holders: &holders, load: &load };
        let first = BinPack::default().assign(&view);
        every_shard_once(&first, 64);
        for _ in 0..5 {
            let holders: HashMap<u32, String> = holders.clone().into_iter().collect();
            let load: HashMap<u32, f64> = load.clone().into_iter().collect();
            let view = View { members: &members, shards: 64, holders: &holders, load: &load };
            assert_eq!(BinPack::default().assign(&view), first);
        }
        // And it is stable: assigning again from its own result moves nothing.
        let holders: HashMap<u32, String> = first
            .iter()
            .enumerate()
            .flat_map(|(i, share)| share.iter().map(move |s| (*s, format!("n{i}"))))
            .collect();
        let view = View { members: &members, shards: 64, holders: &holders, load: &load };
        assert_eq!(BinPack::default().assign(&view), first);
    }

    #[test]
    fn a_shards_load_decays_and_follows_it_to_its_next_holder() {
        let mut loads = Loads::default();
        let counts = HashMap::from([(3, 10)]);
        loads.add(&counts, 1.0, &[3, 4]);
        let first = loads.announced()[&3];
        assert!((first - 10.0).abs() < 0.01, "{first}");
        loads.add(&HashMap::new(), 30.0, &[3, 4]);
        let later = loads.announced()[&3];
        assert!(later < first * 0.7 && later > first * 0.5, "{later}");
        assert!(!loads.announced().contains_key(&4), "an idle shard is not announced");
        loads.add(&HashMap::new(), 1.0, &[4]);
        assert!(loads.announced().is_empty(), "a shard handed over is forgotten");
        loads.seed(3, 6.0);
        assert_eq!(loads.announced().get(&3), Some(&6.0));
    }
}
