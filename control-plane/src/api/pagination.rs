//! The one shape of every list the admin API answers: the `Page` a client
//! asks for (`?limit=&offset=`) and the `List` page it gets back,
//! `{"data", "total", "limit", "offset", "next_offset"}`. Lists kept in
//! memory (a gateway's entities, gateways, tokens, the fleet) are cut here;
//! the version history and the audit log, which grow without bound, are cut
//! by the store.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::ApiError;

/// Pagination of list endpoints.
#[derive(Debug, Clone, Copy, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Page {
    /// Items per page, 1 to 1000 (default 100).
    pub limit: Option<u32>,
    /// Items to skip (default 0).
    pub offset: Option<u64>,
}

impl Page {
    pub const MAX_LIMIT: u32 = 1_000;
    pub const DEFAULT_LIMIT: u32 = 100;

    /// `(limit, offset)`, checked.
    pub fn resolve(self) -> Result<(u32, u64), ApiError> {
        let limit = self.limit.unwrap_or(Self::DEFAULT_LIMIT);
        if !(1..=Self::MAX_LIMIT).contains(&limit) {
            return Err(ApiError::invalid("limit", format!("must be 1 to {}", Self::MAX_LIMIT)));
        }
        Ok((limit, self.offset.unwrap_or(0)))
    }
}

/// A page of a list.
#[derive(Debug, Serialize, ToSchema)]
pub struct List<T> {
    pub data: Vec<T>,
    /// Items in the whole list.
    pub total: u64,
    pub limit: u32,
    pub offset: u64,
    /// The `offset` of the next page, absent on the last one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_offset: Option<u64>,
}

impl<T> List<T> {
    /// The page of `items` (the whole list) that `page` asks for.
    pub fn page(items: Vec<T>, page: Page) -> Result<Self, ApiError> {
        let (limit, offset) = page.resolve()?;
        let total = items.len() as u64;
        let data = items.into_iter().skip(usize::try_from(offset).unwrap_or(usize::MAX)).take(limit as usize).collect();
        Ok(Self::of(data, total, limit, offset))
    }

    /// A page already cut (by the store): `data` starts at `offset` of `total` items.
    pub fn of(data: Vec<T>, total: u64, limit: u32, offset: u64) -> Self {
        let end = offset.saturating_add(data.len() as u64);
        Self { data, total, limit, offset, next_offset: (end < total).then_some(end) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_cut_the_list_and_point_to_the_next() {
        let first = List::page((0..5).collect(), Page { limit: Some(2), offset: None }).unwrap();
        assert_eq!((first.data, first.total, first.next_offset), (vec![0, 1], 5, Some(2)));
        let last = List::page((0..5).collect(), Page { limit: Some(2), offset: Some(4) }).unwrap();
        assert_eq!((last.data, last.next_offset), (vec![4], None));
        let beyond = List::page((0..5).collect::<Vec<i32>>(), Page { limit: None, offset: Some(99) }).unwrap();
        assert_eq!((beyond.data.len(), beyond.limit, beyond.next_offset), (0, Page::DEFAULT_LIMIT, None));
        assert!(List::page(vec![1], Page { limit: Some(0), offset: None }).is_err());
    }
}
