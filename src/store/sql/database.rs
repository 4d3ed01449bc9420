//! [`Store`] on SQL: what concerns the database as a whole.

use async_trait::async_trait;

use super::DB;
use crate::store::{
    PoolStats, Store, StoreResult,
    sql::{Backend, ResultExt, SqlStore},
};

#[async_trait]
impl Store for SqlStore<DB> {
    fn write_parallelism(&self) -> usize {
        DB::WRITE_PARALLELISM
    }

    fn pool_stats(&self) -> PoolStats {
        let mut pools = vec![&self.read];
        if DB::SEPARATE_WRITE_POOL {
            pools.push(&self.write);
        }
        pools.into_iter().fold(PoolStats::default(), |stats, pool| {
            stats.plus_pool(pool.size(), pool.num_idle(), pool.options().get_max_connections())
        })
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query::<DB>("SELECT 1").execute(&self.read).await.store()?;
        Ok(())
    }
}
