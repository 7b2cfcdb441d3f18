//! Where a record came from: the names every stage of the path shares, so
//! that none of them imports another for them.

use std::sync::Arc;

/// A topic's partition.
pub type Partition = (Arc<str>, i32);

/// Where a record came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
}
