//! Readings of a Redis server for the report: commands executed (INFO commandstats) and memory
//! used (INFO memory), plus the bare-ZSET baseline of memory per waiter.

use std::collections::HashMap;

use fred::prelude::*;

/// A connected fred pool of `size` clients.
pub async fn pool(url: &str, size: usize) -> anyhow::Result<Pool> {
    let config = Config::from_url(url)?;
    let pool = Builder::from_config(config).build_pool(size.max(1))?;
    pool.init().await?;
    Ok(pool)
}

/// `INFO <section>` as key → value.
pub async fn info(pool: &Pool, section: &str) -> anyhow::Result<HashMap<String, String>> {
    let text: String = pool
        .next()
        .custom(fred::cmd!("INFO"), vec![section.to_string()])
        .await?;
    Ok(text
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect())
}

/// Commands the server has executed since its start (sum of `calls=` over commandstats),
/// excluding the INFO commands this reading itself sends.
pub async fn commands_total(pool: &Pool) -> anyhow::Result<u64> {
    let stats = info(pool, "commandstats").await?;
    Ok(stats
        .iter()
        .filter(|(k, _)| k.as_str() != "cmdstat_info")
        .filter_map(|(_, v)| {
            v.split(',')
                .find_map(|f| f.strip_prefix("calls="))
                .and_then(|n| n.parse::<u64>().ok())
        })
        .sum())
}

/// `used_memory` in bytes.
pub async fn used_memory(pool: &Pool) -> anyhow::Result<u64> {
    let mem = info(pool, "memory").await?;
    mem.get("used_memory")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("INFO memory has no used_memory"))
}

/// Bytes per entry of a bare ZSET holding `n` members shaped like rushgate identities (16
/// characters) with sequence-number scores: the floor any Redis queue pays per waiter.
pub async fn bare_zset_bytes_per_entry(pool: &Pool, n: u64) -> anyhow::Result<f64> {
    let key = "rg:{bench-baseline}:zset";
    let _: i64 = pool.next().del(key).await?;
    let before = used_memory(pool).await?;
    let chunk = 1000u64;
    let mut start = 0u64;
    while start < n {
        let end = (start + chunk).min(n);
        let members: Vec<(f64, String)> = (start..end)
            .map(|i| (i as f64 + 1.0, format!("z{i:015}")))
            .collect();
        let _: i64 = pool
            .next()
            .zadd(key, None, None, false, false, members)
            .await?;
        start = end;
    }
    let after = used_memory(pool).await?;
    let _: i64 = pool.next().del(key).await?;
    Ok(after.saturating_sub(before) as f64 / n.max(1) as f64)
}
