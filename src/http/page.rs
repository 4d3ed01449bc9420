//! Cursor pagination, one pattern for every list endpoint (webhooks, API keys, users, events,
//! deliveries): `?limit=` (1 to 200, default 50) and `?cursor=` (the `next_cursor` of the previous page)
//! in the query, `next_cursor` beside the list in the answer (null on the last page). A cursor is the
//! id of the last row of the previous page; ids are time-ordered UUIDv7, so the store pages by comparing
//! ids (`id < cursor ORDER BY id DESC`, or `>` for the lists kept oldest first) and a page never skips or
//! repeats a row while rows are added. A cursor that is not a UUID, or a limit out of range, is a 400.
//! A handler takes [`PageQuery`] as a `Query` of its own, beside its filters.

use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;

use super::{ApiError, ApiResult};
use crate::store::Page;

/// Page size: default and maximum.
pub const DEFAULT_LIMIT: i64 = 50;
pub const MAX_LIMIT: i64 = 200;

/// The paging parameters of a list endpoint.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// `next_cursor` of the previous page; absent: the first page.
    cursor: Option<Uuid>,
    /// Rows per page, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<i64>,
}

impl PageQuery {
    /// The page asked for, checked.
    pub fn page(&self) -> ApiResult<Page> {
        page(self.limit, self.cursor)
    }
}

fn page(limit: Option<i64>, cursor: Option<Uuid>) -> ApiResult<Page> {
    let limit = match limit {
        None => DEFAULT_LIMIT,
        Some(limit) if (1..=MAX_LIMIT).contains(&limit) => limit,
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("limit must be between 1 and {MAX_LIMIT}"),
            ));
        }
    };
    Ok(Page { cursor, limit })
}

/// The cursor of the page after `rows` (a full page): the last row's id; `None` after a short page.
pub fn next_cursor<T>(rows: &[T], page: Page, id: impl Fn(&T) -> Uuid) -> Option<Uuid> {
    (rows.len() as i64 == page.limit).then(|| rows.last().map(id)).flatten()
}
