//! Environment overrides: `RUSHGATE_<SECTION>_<KEY>` for every scalar of a section and
//! `RUSHGATE_<ROOMS|SALES|COUPONS>_<ID>_<KEY>` for an entry, applied to the TOML value before
//! it is typed. Read through [`EnvSource`], so tests pass a map and never call `set_var`.

use std::collections::HashMap;

use super::{Config, CouponConfig, Problem, RoomConfig, SaleConfig};

/// Prefix of every environment override.
const ENV_PREFIX: &str = "RUSHGATE";

/// Where environment overrides come from; tests pass a map instead of touching the process env.
pub trait EnvSource {
    /// The value of variable `name`, if set.
    fn get(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl EnvSource for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl EnvSource for HashMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        HashMap::get(self, name).cloned()
    }
}

/// Applies `RUSHGATE_<SECTION>_<KEY>` to every scalar of the sections (including defaults that the
/// file left out) and `RUSHGATE_<ROOMS|SALES|COUPONS>_<ID>_<KEY>` to every room, sale and coupon
/// campaign (id upper-cased, `-` as `_`). Each problem is named by its variable.
pub(super) fn apply_env_overrides(
    table: &mut toml::Table,
    env: &dyn EnvSource,
) -> Result<(), Vec<Problem>> {
    let mut problems = Vec::new();
    let defaults = match toml::Table::try_from(Config::default()) {
        Ok(t) => t,
        Err(e) => return Err(vec![Problem::new("defaults", e.to_string())]),
    };
    for (section, default_value) in &defaults {
        let toml::Value::Table(default_section) = default_value else {
            continue;
        };
        let target = table
            .entry(section.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let toml::Value::Table(target) = target else {
            continue; // a type error that deserialization reports with its path
        };
        let mut keys: Vec<String> = default_section.keys().cloned().collect();
        // Optional keys (redis_url, the identity keys) serialize to nothing; they can still be
        // set from env (a deployment keeps the identity secret in its environment).
        if section == "store" {
            keys.push("redis_url".into());
        }
        if section == "identity" {
            for key in ["secret", "jwks_url", "issuer", "audience", "cookie"] {
                keys.push(key.into());
            }
        }
        for key in keys {
            let var = format!(
                "{ENV_PREFIX}_{}_{}",
                section.to_uppercase(),
                key.to_uppercase()
            );
            if let Some(raw) = env.get(&var) {
                let like = target.get(&key).or_else(|| default_section.get(&key));
                match env_value(&raw, like) {
                    Ok(v) => {
                        target.insert(key, v);
                    }
                    Err(msg) => problems.push(Problem::new(var, msg)),
                }
            }
        }
    }
    let arrays = [
        ("rooms", toml::Table::try_from(RoomConfig::env_template())),
        (
            "sales",
            toml::Table::try_from(SaleConfig::with_ids("x", "x", 0)),
        ),
        (
            "coupons",
            toml::Table::try_from(CouponConfig {
                id: "x".into(),
                limit: 1,
                room: Some("x".into()),
            }),
        ),
    ];
    for (section, item_keys) in arrays {
        let item_keys = item_keys.map_err(|e| vec![Problem::new("defaults", e.to_string())])?;
        let Some(toml::Value::Array(items)) = table.get_mut(section) else {
            continue;
        };
        for item in items.iter_mut() {
            let toml::Value::Table(item) = item else {
                continue;
            };
            let Some(id) = item.get("id").and_then(|v| v.as_str()).map(str::to_string) else {
                continue;
            };
            let env_id = id.to_uppercase().replace('-', "_");
            for (key, default) in &item_keys {
                if key == "id" {
                    continue;
                }
                let var = format!(
                    "{ENV_PREFIX}_{}_{env_id}_{}",
                    section.to_uppercase(),
                    key.to_uppercase()
                );
                if let Some(raw) = env.get(&var) {
                    let like = item.get(key).unwrap_or(default).clone();
                    match env_value(&raw, Some(&like)) {
                        Ok(v) => {
                            item.insert(key.clone(), v);
                        }
                        Err(msg) => problems.push(Problem::new(var, msg)),
                    }
                }
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// Converts an env string into a TOML value of the same type as `like`.
fn env_value(raw: &str, like: Option<&toml::Value>) -> Result<toml::Value, String> {
    match like {
        Some(toml::Value::Integer(_)) => raw
            .trim()
            .parse::<i64>()
            .map(toml::Value::Integer)
            .map_err(|_| format!("expected an integer, got `{raw}`")),
        Some(toml::Value::Float(_)) => raw
            .trim()
            .parse::<f64>()
            .map(toml::Value::Float)
            .map_err(|_| format!("expected a number, got `{raw}`")),
        Some(toml::Value::Boolean(_)) => match raw.trim() {
            "true" | "1" => Ok(toml::Value::Boolean(true)),
            "false" | "0" => Ok(toml::Value::Boolean(false)),
            _ => Err(format!("expected true or false, got `{raw}`")),
        },
        _ => Ok(toml::Value::String(raw.to_string())),
    }
}
