//! Envoy's vocabulary, shared by the stages that make, keep, serve and read Envoy
//! configuration (`translate`, `cache`, `xds`, `admin`, `load`): the xDS resource types and
//! their type URLs (`types`), packing messages into `Any` and rendering them as canonical JSON
//! (`json`), `Struct` ↔ JSON for node metadata (`structs`), and the names one resource makes a
//! proxy fetch (`refs`). It holds no pipeline logic and imports no stage.

pub mod json;
pub mod refs;
pub mod structs;
pub mod types;

pub use json::{RenderError, any_to_json, pack, pool};
pub use refs::rds_names;
pub use structs::{json_to_struct, struct_to_json};
pub use types::{ResourceType, TypeSet};
