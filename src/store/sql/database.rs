//! [`Store`] on SQL: what concerns the database as a whole.

use async_trait::async_trait;

use super::DB;
use crate::store::{
    Store, StoreResult,
    sql::{Backend, ResultExt, SqlStore},
};

#[async_trait]
impl Store for SqlStore<DB> {
    fn write_parallelism(&self) -> usize {
        DB::WRITE_PARALLELISM
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query::<DB>("SELECT 1").execute(&self.read).await.store()?;
        Ok(())
    }
}
