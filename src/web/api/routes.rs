//! The route builder: one call, `r.add(__path_get, get)`, serves a handler with actix at the path
//! and methods of its `#[utoipa::path]` and adds that operation to the OpenAPI document. So the
//! routes `api::configure` registers and the operations `openapi::document` describes are one
//! list, built by the same functions. The methods of one path share one `web::resource`, in the
//! order the paths are first added, so a known path asked with another method still answers 405
//! (utoipa-actix-web's `#[get]`-style macros make each method its own resource: 404 instead).

use std::any::type_name;

use actix_web::http::Method;
use actix_web::{FromRequest, Handler, Responder, Route, web};
use utoipa::openapi::RefOr;
use utoipa::openapi::path::{HttpMethod, Paths};
use utoipa::openapi::schema::Schema;

/// The schemas an operation names, as utoipa collects them.
pub type Schemas = Vec<(String, RefOr<Schema>)>;

/// The routes of one group (the API under a base path, or the root paths), in the order added:
/// either to serve them (`Routes::of`) or to document them (`Routes::documenting`). Only the
/// document needs the operations and schemas, and building them costs: actix builds the routes
/// once per worker thread and base path, so serving builds none.
#[derive(Default)]
pub struct Routes {
    /// Whether `add` collects the operations and schemas (for the document).
    documenting: bool,
    resources: Vec<(String, Vec<Route>)>,
    paths: Paths,
    schemas: Schemas,
    /// `(operation type, handler type)` of every `add`, so a test can check each pair belongs
    /// together (`__path_get` with `get`).
    pairs: Vec<(&'static str, &'static str)>,
}

impl Routes {
    /// The routes `group` adds, to serve them.
    pub fn of(group: fn(&mut Routes)) -> Routes {
        let mut routes = Routes::default();
        group(&mut routes);
        routes
    }

    /// The routes `group` adds, with their operations and schemas, to document them.
    pub fn documenting(group: fn(&mut Routes)) -> Routes {
        let mut routes = Routes {
            documenting: true,
            ..Routes::default()
        };
        group(&mut routes);
        routes
    }

    /// Serves `handler` at the path and methods of `operation` (the `__path_<handler>` type
    /// `#[utoipa::path]` generates next to it) and documents the operation.
    pub fn add<P, F, Args>(&mut self, _operation: P, handler: F) -> &mut Self
    where
        // utoipa's own traits for what `#[utoipa::path]` generates (utoipa-actix-web uses them too).
        P: utoipa::Path + utoipa::__dev::SchemaReferences + utoipa::__dev::Tags<'static>,
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        let path = P::path();
        let methods = P::methods();
        let index = match self.resources.iter().position(|(p, _)| *p == path) {
            Some(index) => index,
            None => {
                self.resources.push((path.clone(), Vec::new()));
                self.resources.len() - 1
            }
        };
        for method in &methods {
            self.resources[index].1.push(
                web::route()
                    .method(actix_method(method))
                    .to(handler.clone()),
            );
        }
        if self.documenting {
            let mut operation = P::operation();
            operation
                .tags
                .get_or_insert_with(Vec::new)
                .extend(P::tags().into_iter().map(str::to_string));
            self.paths.add_path_operation(&path, methods, operation);
            P::schemas(&mut self.schemas);
        }
        self.pairs.push((type_name::<P>(), type_name::<F>()));
        self
    }

    /// Registers every path as one resource with its methods.
    pub fn register(self, cfg: &mut web::ServiceConfig) {
        for (path, routes) in self.resources {
            let resource = routes
                .into_iter()
                .fold(web::resource(path), |resource, route| resource.route(route));
            cfg.service(resource);
        }
    }

    /// The documented operations, every path under `prefix`, and the schemas they name.
    pub fn document(self, prefix: &str) -> (Paths, Schemas) {
        let mut paths = Paths::new();
        for (path, item) in self.paths.paths {
            paths.paths.insert(format!("{prefix}{path}"), item);
        }
        (paths, self.schemas)
    }

    /// The `(operation type, handler type)` names of every `add`.
    pub fn pairs(&self) -> &[(&'static str, &'static str)] {
        &self.pairs
    }
}

fn actix_method(method: &HttpMethod) -> Method {
    match method {
        HttpMethod::Get => Method::GET,
        HttpMethod::Post => Method::POST,
        HttpMethod::Put => Method::PUT,
        HttpMethod::Delete => Method::DELETE,
        HttpMethod::Options => Method::OPTIONS,
        HttpMethod::Head => Method::HEAD,
        HttpMethod::Patch => Method::PATCH,
        HttpMethod::Trace => Method::TRACE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `r.add(__path_a, b)` would serve `b` under `a`'s documentation.
    #[test]
    fn every_operation_is_added_with_its_own_handler() {
        let mut checked = 0;
        for group in [super::super::api_routes, super::super::root_routes] {
            let routes = Routes::of(group);
            for (operation, handler) in routes.pairs() {
                let (module, name) = handler.rsplit_once("::").expect("a path");
                assert_eq!(
                    *operation,
                    format!("{module}::__path_{name}"),
                    "documented by one operation, served by another handler"
                );
                checked += 1;
            }
        }
        assert!(checked >= 30, "only {checked} routes");
    }
}
