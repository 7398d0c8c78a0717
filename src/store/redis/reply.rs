//! Decoding of Redis replies into the store's values; a reply of the wrong shape is a
//! [`StoreError::Protocol`], never a panic.

use fred::prelude::*;

use crate::store::StoreError;

pub(super) fn int(v: &Value, what: &str) -> Result<u64, StoreError> {
    match v {
        Value::Integer(i) => u64::try_from(*i).map_err(|_| bad(what)),
        Value::String(s) => s.parse::<u64>().map_err(|_| bad(what)),
        _ => Err(bad(what)),
    }
}

pub(super) fn text<'a>(v: &'a Value, what: &str) -> Result<&'a str, StoreError> {
    v.as_str_ref().ok_or_else(|| bad(what))
}

trait AsStrRef {
    fn as_str_ref(&self) -> Option<&str>;
}

impl AsStrRef for Value {
    fn as_str_ref(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            Value::Bytes(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }
}

pub(super) fn bad(what: &str) -> StoreError {
    StoreError::Protocol(format!("cannot read {what}"))
}

pub(super) fn array(v: Value, len: usize, what: &str) -> Result<Vec<Value>, StoreError> {
    match v {
        Value::Array(items) if items.len() == len => Ok(items),
        _ => Err(bad(what)),
    }
}
