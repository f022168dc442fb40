//! Serde for `SpiffeId` as its URI string; the identity crate stays free of serde.

use ambit_identity::SpiffeId;
use serde::{Deserialize, Deserializer, Serializer};

pub(crate) fn serialize<S: Serializer>(id: &SpiffeId, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(id)
}

pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<SpiffeId, D::Error> {
    let uri = String::deserialize(deserializer)?;
    SpiffeId::parse(&uri).map_err(serde::de::Error::custom)
}
