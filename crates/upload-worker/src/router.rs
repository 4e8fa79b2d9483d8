//! Which route a request names: a method and a path, under `/` or `/api/`, matched against the
//! route table of `lib.rs`. Pure, so that it is tested natively.

/// The route a request matched: its pattern (as logged and documented) and its path parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Call {
    pub route: &'static str,
    params: Vec<(&'static str, String)>,
}

impl Call {
    /// The path parameter `name` (`:name` in the pattern).
    pub(crate) fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }
}

/// What a request's method and path name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Matched {
    Route(Call),
    /// A known path, but not with this method.
    WrongMethod,
    NotFound,
}

/// Matches `path` (with or without the `/api` prefix) against `routes`, (method, pattern) pairs
/// whose `:name` segments match any one non-empty segment.
/// The rest of `path` (with or without the `/api` prefix) below `prefix`, if it is below it.
pub(crate) fn under<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    let path = path.strip_prefix("/api").filter(|p| p.starts_with('/')).unwrap_or(path);
    path.strip_prefix(prefix).filter(|rest| rest.starts_with('/'))
}

pub(crate) fn find(routes: &[(&'static str, &'static str)], method: &str, path: &str) -> Matched {
    let path = path.strip_prefix("/api").filter(|p| p.starts_with('/')).unwrap_or(path);
    let mut known_path = false;
    for &(route_method, pattern) in routes {
        let Some(params) = captures(pattern, path) else { continue };
        if route_method == method {
            return Matched::Route(Call { route: pattern, params });
        }
        known_path = true;
    }
    if known_path { Matched::WrongMethod } else { Matched::NotFound }
}

fn captures(pattern: &'static str, path: &str) -> Option<Vec<(&'static str, String)>> {
    let (mut wanted, mut given) = (pattern.split('/'), path.split('/'));
    let mut params = Vec::new();
    loop {
        match (wanted.next(), given.next()) {
            (None, None) => return Some(params),
            (Some(w), Some(g)) => match w.strip_prefix(':') {
                Some(name) if !g.is_empty() => params.push((name, percent_decode(g))),
                Some(_) => return None,
                None if w == g => {}
                None => return None,
            },
            _ => return None,
        }
    }
}

/// A path segment as sent (`%2F` and the like decoded; anything malformed kept as it is).
fn percent_decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| segment.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTES: &[(&str, &str)] =
        &[("POST", "/battle-data/upload"), ("GET", "/battle-data/datasets/:id"), ("GET", "/battle-data/datasets/:id/outputs")];

    fn check(method: &str, path: &str, expected: Option<(&str, Option<&str>)>) {
        let got = find(ROUTES, method, path);
        match expected {
            Some((route, id)) => {
                let Matched::Route(call) = &got else { panic!("{method} {path}: {got:?}") };
                assert_eq!(call.route, route, "{method} {path}");
                assert_eq!(call.param("id"), id, "{method} {path}");
            }
            None => assert!(!matches!(got, Matched::Route(_)), "{method} {path}: {got:?}"),
        }
    }

    #[test]
    fn routes_answer_under_both_prefixes_with_their_parameters() {
        check("POST", "/battle-data/upload", Some(("/battle-data/upload", None)));
        check("POST", "/api/battle-data/upload", Some(("/battle-data/upload", None)));
        check("GET", "/api/battle-data/datasets/ds-1", Some(("/battle-data/datasets/:id", Some("ds-1"))));
        check("GET", "/battle-data/datasets/ds%2D1/outputs", Some(("/battle-data/datasets/:id/outputs", Some("ds-1"))));
        check("GET", "/battle-data/datasets/", None);
        check("GET", "/battle-data/datasets/a/b", None);
        check("GET", "/apibattle-data/upload", None);
        assert_eq!(find(ROUTES, "GET", "/api/battle-data/upload"), Matched::WrongMethod);
        assert_eq!(find(ROUTES, "GET", "/nothing"), Matched::NotFound);
        assert_eq!(find(ROUTES, "GET", "/"), Matched::NotFound);
    }
}
