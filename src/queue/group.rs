//! Groups of rooms (`[[groups]]`): one shopper may wait in every room of a group and holds at
//! most `max_active_per_shopper` sessions at once across them.
//!
//! The rule, as enforced: a session is claimed (its pass signed) only after the shopper's hold
//! in the group was granted ([`crate::store::Store::group_hold`], one atomic step on the
//! group's own key, before the room's claim), so two nodes cannot both sign passes beyond the
//! cap. An admission that would exceed it is *held*: the place stays admitted (its claim
//! window kept open while the shopper keeps looking) and the pass is signed once one of the
//! shopper's other sessions ends (leave, an operator's end, or its expiry). The shopper may
//! instead give the held place up (`leave`). The shopper is the same identity in every room:
//! a shop-signed user (or user key), or, for an anonymous browser, the identity of a ticket it
//! already holds in another room of the group.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::GroupConfig;

/// A group as a room sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// Group id (names its store key).
    pub id: String,
    /// The rooms of the group.
    pub rooms: Vec<String>,
    /// Sessions one shopper holds at once across the group.
    pub max_active_per_shopper: u32,
}

/// Every group, by the id of each of its rooms.
#[derive(Debug, Clone, Default)]
pub struct Groups {
    by_room: Arc<HashMap<String, Arc<Group>>>,
}

impl Groups {
    /// The groups of a validated configuration.
    pub fn new(configs: &[GroupConfig]) -> Groups {
        let mut by_room = HashMap::new();
        for c in configs {
            let group = Arc::new(Group {
                id: c.id.clone(),
                rooms: c.rooms.clone(),
                max_active_per_shopper: c.max_active_per_shopper,
            });
            for room in &c.rooms {
                by_room.insert(room.clone(), group.clone());
            }
        }
        Groups {
            by_room: Arc::new(by_room),
        }
    }

    /// The group of `room`, if it is in one.
    pub fn of(&self, room: &str) -> Option<&Group> {
        self.by_room.get(room).map(|g| &**g)
    }
}
