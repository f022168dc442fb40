//! Config from the controller: every config the [`ambit_api::ConfigClient`] accepts for this
//! waypoint's scope becomes a [`ConfigFile`] and then a [`Snapshot`], exactly as a file
//! would, so both sources share one validation path.

use std::sync::Arc;

use ambit_api::ConfigView;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::config::{ConfigFile, ConfigHandle, GatewayName, Snapshot};

/// The waypoint settings the controller's scope implies, with `view`'s objects.
pub fn config_file(view: &ConfigView, gateway: &GatewayName) -> ConfigFile {
    ConfigFile {
        waypoint: Some(gateway.clone()),
        services: view.services().cloned().collect(),
        workloads: view.workloads().cloned().collect(),
        policies: view.authorization_policies().cloned().collect(),
        routes: view.http_routes().cloned().collect(),
        grpc_routes: view.grpc_routes().cloned().collect(),
        virtual_services: view.virtual_services().cloned().collect(),
        destination_rules: view.destination_rules().cloned().collect(),
        local_rate_limits: view.local_rate_limits().cloned().collect(),
        request_authentications: view.request_authentications().cloned().collect(),
        ..ConfigFile::default()
    }
}

/// An empty snapshot for `gateway`, in force until the controller's first config arrives.
pub fn empty_snapshot(gateway: &GatewayName) -> Result<Snapshot, String> {
    Snapshot::build(
        ConfigFile {
            waypoint: Some(gateway.clone()),
            ..ConfigFile::default()
        },
        0,
    )
}

/// Publishes every config the controller sends into `handle`, until `views` closes. Calls
/// `on_first` once the first synced config is in force. A config the snapshot refuses (a VIP
/// claimed twice, a route that does not compile) is logged and skipped; the last good one
/// stays.
pub async fn follow_controller(
    mut views: watch::Receiver<Arc<ConfigView>>,
    handle: ConfigHandle,
    gateway: GatewayName,
    on_first: impl FnOnce() + Send,
) {
    let mut on_first = Some(on_first);
    let mut generation = handle.load().generation;
    loop {
        let view = views.borrow_and_update().clone();
        if view.is_synced() {
            match Snapshot::build(config_file(&view, &gateway), generation + 1) {
                Ok(snapshot) => {
                    generation += 1;
                    handle.publish(snapshot);
                    info!(
                        controller_version = view.version(),
                        generation,
                        resources = view.len(),
                        "config from the controller in force"
                    );
                    if let Some(first) = on_first.take() {
                        first();
                    }
                }
                Err(err) => warn!(
                    controller_version = view.version(),
                    %err,
                    "controller config refused; keeping the last good one"
                ),
            }
        }
        if views.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests;
