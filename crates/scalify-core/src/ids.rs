use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use ulid::Ulid;

/// Identifier of a user, a room or a message: a ULID, so ids are unique across nodes without
/// coordination and sort by creation time. On the wire it is the canonical 26-character string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id(Ulid);

impl Id {
    pub fn new() -> Self {
        Id(Ulid::new())
    }
    /// Lower-case form, used where an id becomes part of a room name (room names are lower-case).
    pub fn to_lowercase(&self) -> String {
        self.0.to_string().to_ascii_lowercase()
    }
}

impl Default for Id {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl FromStr for Id {
    type Err = ulid::DecodeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ulid::from_string(s).map(Id)
    }
}

impl Serialize for Id {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_its_string_form() {
        let id = Id::new();
        assert_eq!(id.to_string().len(), 26);
        assert_eq!(id.to_string().parse::<Id>().unwrap(), id);
        assert_eq!(id.to_lowercase(), id.to_string().to_ascii_lowercase());
        assert!("not-a-ulid".parse::<Id>().is_err());
    }
}
