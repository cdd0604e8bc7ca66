//! Client profiles: several transforms of one type on one route, each with
//! a `when` (a JWT claim or a request header with an exact value), and at
//! most one without, the default. The first profile in config order whose
//! `when` holds is used; then the default; else none. A route whose choice
//! depends on headers names them in `Vary`, so a cache never hands one
//! client's shape to another.

use http::{HeaderMap, HeaderName, HeaderValue};
use portico_shared::model::policy::transform::When;

use crate::auth::Identity;

/// What picks a profile.
#[derive(Debug)]
enum Selector {
    Claim { name: String, value: String },
    Header { name: HeaderName, value: HeaderValue },
}

impl Selector {
    fn compile(when: &When) -> Result<Self, String> {
        match (&when.claim, &when.header) {
            (Some(claim), _) => Ok(Self::Claim { name: claim.clone(), value: when.equals.clone() }),
            (None, Some(header)) => Ok(Self::Header {
                name: HeaderName::from_bytes(header.as_bytes()).map_err(|_| format!("when.header '{header}' is not a header name"))?,
                value: HeaderValue::from_str(&when.equals).map_err(|_| format!("when.equals '{}' is not a header value", when.equals))?,
            }),
            (None, None) => Err("when names neither a claim nor a header".to_owned()),
        }
    }

    fn holds(&self, headers: &HeaderMap, identity: Option<&Identity>) -> bool {
        match self {
            Self::Claim { name, value } => identity.and_then(|i| i.claim(name)).is_some_and(|claim| claim == *value),
            Self::Header { name, value } => headers.get(name) == Some(value),
        }
    }
}

/// The profiles of one transform type on one route: boxed, and absent
/// when the route has none (most routes, each holding two of these).
#[derive(Debug)]
pub struct Profiles<T>(Option<Box<Choice<T>>>);

/// The profiles of a [`Profiles`] that has some.
#[derive(Debug)]
struct Choice<T> {
    selected: Vec<(Selector, T)>,
    default: Option<T>,
    /// The header names profiles are picked by, for `Vary`.
    vary: Option<HeaderValue>,
}

impl<T> Default for Profiles<T> {
    fn default() -> Self {
        Self(None)
    }
}

impl<T> Profiles<T> {
    /// Compiles `(when, policy)` pairs in config order with `build`.
    pub fn compile<'p, P: 'p>(
        policies: impl IntoIterator<Item = (Option<&'p When>, &'p P)>,
        build: impl Fn(&'p P) -> Result<T, String>,
    ) -> Result<Self, String> {
        let mut profiles = Choice { selected: Vec::new(), default: None, vary: None };
        let mut vary: Vec<String> = Vec::new();
        for (when, policy) in policies {
            let shaper = build(policy)?;
            match when {
                Some(when) => {
                    if let Some(header) = &when.header
                        && !vary.contains(header)
                    {
                        vary.push(header.clone());
                    }
                    profiles.selected.push((Selector::compile(when)?, shaper));
                }
                None => profiles.default = Some(shaper),
            }
        }
        if !vary.is_empty() {
            profiles.vary = Some(HeaderValue::from_str(&vary.join(", ")).map_err(|_| "when.header is not a header name".to_owned())?);
        }
        if profiles.selected.is_empty() && profiles.default.is_none() {
            return Ok(Self(None));
        }
        profiles.selected.shrink_to_fit();
        Ok(Self(Some(Box::new(profiles))))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// The profile for a request.
    pub fn pick(&self, headers: &HeaderMap, identity: Option<&Identity>) -> Option<&T> {
        self.pick_indexed(headers, identity).map(|(_, shaper)| shaper)
    }

    /// [`Self::pick`], with the profile's place among the route's (the
    /// default after the others).
    pub fn pick_indexed(&self, headers: &HeaderMap, identity: Option<&Identity>) -> Option<(usize, &T)> {
        let choice = self.0.as_deref()?;
        match choice.selected.iter().position(|(selector, _)| selector.holds(headers, identity)) {
            Some(index) => Some((index, &choice.selected[index].1)),
            None => choice.default.as_ref().map(|shaper| (choice.selected.len(), shaper)),
        }
    }

    /// The header names the choice depends on (`x-client, x-app`), if any.
    pub fn vary(&self) -> Option<&HeaderValue> {
        self.0.as_ref()?.vary.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn when_header(name: &str, value: &str) -> When {
        When { claim: None, header: Some(name.to_owned()), equals: value.to_owned() }
    }

    #[test]
    fn first_matching_profile_then_default() {
        let (mobile, tv) = (when_header("x-client", "mobile"), when_header("x-client", "tv"));
        let policies = [(Some(&mobile), &"mobile"), (None, &"default"), (Some(&tv), &"tv")];
        let profiles = Profiles::compile(policies, |p: &&str| Ok::<_, String>((*p).to_owned())).unwrap();
        let mut headers = HeaderMap::new();
        assert_eq!(profiles.pick(&headers, None).map(String::as_str), Some("default"));
        headers.insert("x-client", HeaderValue::from_static("tv"));
        assert_eq!(profiles.pick(&headers, None).map(String::as_str), Some("tv"));
        headers.insert("x-client", HeaderValue::from_static("mobile"));
        assert_eq!(profiles.pick(&headers, None).map(String::as_str), Some("mobile"));
        assert_eq!(profiles.vary().unwrap(), "x-client");
    }
}
