//! `[[groups]]`: rooms a shopper may wait in at once (several drops), with a cap on the
//! sessions one shopper holds at once across them.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::Problem;
use crate::id::is_valid_id;

/// Most sessions a group may let one shopper hold at once.
pub const MAX_ACTIVE_PER_SHOPPER: u32 = 100;

/// One `[[groups]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    /// Group id: `[a-z0-9_-]{1,64}`; names the group's store key.
    pub id: String,
    /// The rooms of the group (configured room ids; a room is in at most one group).
    pub rooms: Vec<String>,
    /// Sessions one shopper holds at once across the group's rooms; an admission beyond it is
    /// held (its place kept) until one of them ends.
    #[serde(default = "one")]
    pub max_active_per_shopper: u32,
}

fn one() -> u32 {
    1
}

/// Ids, room membership (configured rooms, each in one group at most) and the cap's range.
pub(super) fn validate_groups(
    groups: &[GroupConfig],
    rooms: &HashSet<&str>,
    problems: &mut Vec<Problem>,
) {
    let mut ids = HashSet::new();
    let mut member_of: HashMap<&str, &str> = HashMap::new();
    for (i, group) in groups.iter().enumerate() {
        let mut field =
            |name: &str, msg: &str| problems.push(Problem::new(format!("groups[{i}].{name}"), msg));
        if !is_valid_id(&group.id) {
            field("id", "must be 1-64 characters of a-z, 0-9, '-' or '_'");
        } else if !ids.insert(group.id.as_str()) {
            field("id", "is used by another group");
        }
        if group.rooms.is_empty() {
            field("rooms", "must name at least one room");
        }
        for room in &group.rooms {
            if !rooms.contains(room.as_str()) {
                field("rooms", &format!("`{room}` is not a configured room"));
            } else if let Some(other) = member_of.insert(room.as_str(), group.id.as_str()) {
                field(
                    "rooms",
                    &format!(
                        "`{room}` is already in group `{other}` (a room is in one group at most)"
                    ),
                );
            }
        }
        if group.max_active_per_shopper == 0
            || group.max_active_per_shopper > MAX_ACTIVE_PER_SHOPPER
        {
            field(
                "max_active_per_shopper",
                &format!("must be between 1 and {MAX_ACTIVE_PER_SHOPPER}"),
            );
        }
    }
}
