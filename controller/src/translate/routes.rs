//! HTTPRoute → model routes (the model validates the spec and resolves Service parents).

use ambit_model::HttpRoute;

use super::error::Errors;
use crate::objects::Resources;

pub(crate) fn translate(resources: &Resources, errors: &mut Errors) -> Vec<HttpRoute> {
    let mut routes = Vec::new();
    for route in resources.http_routes() {
        match route.to_model() {
            Ok(model) => routes.push(model),
            Err(err) => errors.model("HTTPRoute", err.namespace(), err.name(), &err),
        }
    }
    routes
}
