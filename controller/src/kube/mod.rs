//! The Kubernetes layer: the controller's only contact with the API server.
//!
//! - [`KubeSource`]: watchers for every kind the translation reads, behind the same
//!   [`Source`](crate::Source) trait as the folder source.
//! - [`WaypointDeployer`]: a ServiceAccount, Deployment and Service per `istio-waypoint`
//!   Gateway (built in code, or from a [`WaypointTemplate`] that may add an HPA and a PDB),
//!   by server-side apply, and the Gateway's status.
//! - [`StatusWriter`]: the `istio.io/WaypointBound` condition of Services and the parent
//!   status of HTTPRoutes and GRPCRoutes.
//! - [`RootPublisher`]: the mesh roots as ConfigMap `ambit-ca-root-cert` where ztunnel and
//!   waypoints run, for them to verify the controller's gRPC certificate.
//! - [`TokenReviewAuthenticator`] and [`PodIdentities`]: who may ask the CA for what.
//! - [`API_PERMISSIONS`]: exactly the API calls all of the above make, as RBAC rules.
//! - [`KubeWriters`] and [`TrackIdentities`]: how the binary runs the deployer and status
//!   writer after each translation, and keeps [`PodIdentities`] current.
//!
//! Every write is a server-side apply with field manager [`FIELD_MANAGER`]. Everything that
//! decides *what* to write is a pure function of the objects, tested without a cluster; the
//! requests themselves are tested against a mocked API server.

mod auth;
mod convert;
mod deployer;
mod permissions;
mod roots;
mod source;
mod status;
mod sync;
mod template;

pub use auth::{AuthSettings, PodIdentities, TokenReviewAuthenticator};
pub use deployer::{
    DeployError, WaypointDeployer, WaypointObjects, WaypointSettings, waypoint_objects,
};
pub use permissions::{
    API_PERMISSIONS, ApiPermission, OPTIONAL_WAYPOINT_PERMISSIONS, RequiredPermission,
    UnknownRequest, is_permitted, required_permissions,
};
pub use roots::{
    ROOT_CONFIGMAP, ROOT_CONFIGMAP_KEY, RootPublishError, RootPublisher, root_configmap,
};
pub use source::{KubeSource, KubeSourceConfig};
pub use status::{
    Condition, DEFAULT_CONTROLLER_NAME, RouteParentStatus, RouteStatus, ServiceStatus, StatusError,
    StatusWriter, WAYPOINT_BOUND, route_statuses, service_statuses,
};

pub use sync::{KubeWriters, SyncFailures, TrackIdentities};
pub use template::{PLACEHOLDERS, TemplateError, TemplateValues, WaypointTemplate};

/// The field manager of every server-side apply the controller makes.
pub const FIELD_MANAGER: &str = "ambit-controller";
