//! A provider's API keys: read once from the env variables the config names, used in turn in
//! proportion to their weights (a smooth weighted rotation, so a key of weight 3 gets three
//! calls in four beside a key of weight 1, spread out). Keys never appear in logs, errors or
//! `Debug` output; only the names of their variables do.

use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// One key in the config: the env variable holding it and its share of the calls.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// Name of the environment variable holding the key.
    pub env: String,
    /// Share of the calls, `>= 1` (default 1).
    #[serde(default = "one")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

/// The keys of one provider (as read, or as [`KeyRing::try_map`] made them ready to send) and
/// the rotation state.
pub struct KeyRing<K = String> {
    keys: Vec<(K, u32)>,
    /// Smooth weighted round-robin: current weight per key.
    current: Mutex<Vec<i64>>,
}

impl<K> std::fmt::Debug for KeyRing<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyRing({} keys)", self.keys.len())
    }
}

impl KeyRing {
    /// Reads every key from its variable; the error names the variable that is missing or
    /// empty, or the weight that is 0.
    pub fn from_env(configs: &[KeyConfig]) -> anyhow::Result<Self> {
        let mut keys = Vec::with_capacity(configs.len());
        for config in configs {
            if config.weight == 0 {
                anyhow::bail!("keys: the weight of `{}` must be at least 1", config.env);
            }
            let key = std::env::var(&config.env).unwrap_or_default();
            if key.trim().is_empty() {
                anyhow::bail!(
                    "the API key variable `{}` is not set (or empty); set it, or remove it from \
                     the provider's keys",
                    config.env
                );
            }
            keys.push((key.trim().to_string(), config.weight));
        }
        Ok(Self {
            current: Mutex::new(vec![0; keys.len()]),
            keys,
        })
    }

    /// The keys turned by `f` (given each key's position in the config and the key), in the
    /// same rotation: done once, so a call only picks one.
    pub fn try_map<T>(
        self,
        mut f: impl FnMut(usize, String) -> anyhow::Result<T>,
    ) -> anyhow::Result<KeyRing<T>> {
        let keys = (self.keys.into_iter().enumerate())
            .map(|(i, (key, weight))| Ok((f(i, key)?, weight)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(KeyRing {
            keys,
            current: self.current,
        })
    }
}

impl<K> KeyRing<K> {
    /// The key for the next call.
    pub fn next(&self) -> Option<&K> {
        if self.keys.len() <= 1 {
            return self.keys.first().map(|(k, _)| k);
        }
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let total: i64 = self.keys.iter().map(|(_, w)| i64::from(*w)).sum();
        let mut best = 0;
        for (i, (_, weight)) in self.keys.iter().enumerate() {
            current[i] += i64::from(*weight);
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        Some(&self.keys[best].0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(keys: &[(&str, u32)]) -> KeyRing {
        KeyRing {
            current: Mutex::new(vec![0; keys.len()]),
            keys: keys.iter().map(|(k, w)| (k.to_string(), *w)).collect(),
        }
    }

    #[test]
    fn keys_are_used_in_proportion_to_their_weights_and_spread_out() {
        let keys = ring(&[("a", 3), ("b", 1)]);
        let picks: Vec<&str> = (0..8).map(|_| keys.next().unwrap().as_str()).collect();
        assert_eq!(picks.iter().filter(|k| **k == "a").count(), 6);
        assert_eq!(picks.iter().filter(|k| **k == "b").count(), 2);
        // Never two b's in a row, and b comes once in every four calls.
        assert_eq!(picks[..4].iter().filter(|k| **k == "b").count(), 1);
    }

    #[test]
    fn one_key_or_none() {
        assert_eq!(
            ring(&[("only", 5)]).next().map(String::as_str),
            Some("only")
        );
        assert_eq!(ring(&[]).next(), None);
    }

    #[test]
    fn a_missing_variable_is_named_and_the_key_is_never_printed() {
        let err = KeyRing::from_env(&[KeyConfig {
            env: "WASMGATE_TEST_SURELY_UNSET_KEY".into(),
            weight: 1,
        }])
        .unwrap_err()
        .to_string();
        assert!(err.contains("WASMGATE_TEST_SURELY_UNSET_KEY"), "{err}");
        let keys = ring(&[("sk-secret-value", 1)]);
        assert!(!format!("{keys:?}").contains("sk-secret"));
    }
}
