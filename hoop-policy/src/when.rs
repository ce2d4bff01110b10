//! `when:` selectors: which sessions a rule applies to.

use hoop_core::{PodIdentity, SessionIdentity};

/// A glob pattern: `*` matches any run of characters (including `/`), `?`
/// exactly one; everything else matches itself. No pattern characters means
/// an exact match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob(Vec<char>);

impl Glob {
    /// Compiles a pattern (every string is a valid pattern).
    pub fn new(pattern: &str) -> Self {
        Self(pattern.chars().collect())
    }

    /// Whether `text` matches the whole pattern.
    pub fn matches(&self, text: &str) -> bool {
        let text: Vec<char> = text.chars().collect();
        let pattern = &self.0;
        // Iterative wildcard matching with one backtrack point: linear-ish, no recursion.
        let (mut p, mut t) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while t < text.len() {
            if p < pattern.len()
                && (pattern[p] == '?' || pattern[p] == text[t])
                && pattern[p] != '*'
            {
                p += 1;
                t += 1;
            } else if p < pattern.len() && pattern[p] == '*' {
                star = Some((p, t));
                p += 1;
            } else if let Some((star_p, star_t)) = star {
                p = star_p + 1;
                t = star_t + 1;
                star = Some((star_p, star_t + 1));
            } else {
                return false;
            }
        }
        pattern[p..].iter().all(|&c| c == '*')
    }
}

/// A compiled `when:`. Each present list must match; absent lists match all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    /// `when.database`.
    pub database: Option<Vec<Glob>>,
    /// `when.user`.
    pub user: Option<Vec<Glob>>,
    /// `when.application_name`.
    pub application_name: Option<Vec<Glob>>,
    /// `when.workload` (the cgroup path).
    pub workload: Option<Vec<Glob>>,
    /// `when.namespace` (the Kubernetes pod's namespace).
    pub namespace: Option<Vec<Glob>>,
    /// `when.service_account` (the pod's service account).
    pub service_account: Option<Vec<Glob>>,
    /// `when.pod` (the pod's name).
    pub pod: Option<Vec<Glob>>,
    /// `when.labels`: each key must be on the pod, its value matching one
    /// of the key's patterns.
    pub labels: Option<Vec<(String, Vec<Glob>)>>,
}

impl Selector {
    /// Whether the rule applies to every session.
    pub fn is_unconditional(&self) -> bool {
        self.database.is_none()
            && self.user.is_none()
            && self.application_name.is_none()
            && self.workload.is_none()
            && self.namespace.is_none()
            && self.service_account.is_none()
            && self.pod.is_none()
            && self.labels.is_none()
    }

    /// Whether `session` is selected. An attribute the session does not have
    /// (no `application_name` sent, workload unknown) matches no list.
    /// `user` is the user the server knows the session as: the injected
    /// role when hoop logged in on the workload's behalf (the name the
    /// client asked for is its own, unchecked claim). The Kubernetes
    /// selectors match the pod whose listener accepted the session; a
    /// session from no pod matches none of them.
    pub fn matches(&self, session: &SessionIdentity) -> bool {
        fn list(globs: Option<&Vec<Glob>>, value: Option<&str>) -> bool {
            match globs {
                None => true,
                Some(globs) => value.is_some_and(|v| globs.iter().any(|g| g.matches(v))),
            }
        }
        list(self.database.as_ref(), session.database.as_deref())
            && list(self.user.as_ref(), session.database_user())
            && list(
                self.application_name.as_ref(),
                session.application_name.as_deref(),
            )
            && list(self.workload.as_ref(), session.workload.as_deref())
            && self.matches_pod(session.pod.as_deref())
    }

    fn matches_pod(&self, pod: Option<&PodIdentity>) -> bool {
        fn list(globs: Option<&Vec<Glob>>, value: Option<&str>) -> bool {
            match globs {
                None => true,
                Some(globs) => value.is_some_and(|v| globs.iter().any(|g| g.matches(v))),
            }
        }
        list(self.namespace.as_ref(), pod.map(|p| p.namespace.as_str()))
            && list(
                self.service_account.as_ref(),
                pod.map(|p| p.service_account.as_str()),
            )
            && list(self.pod.as_ref(), pod.map(|p| p.pod.as_str()))
            && self.labels.as_ref().is_none_or(|labels| {
                pod.is_some_and(|p| {
                    labels.iter().all(|(key, globs)| {
                        p.labels
                            .get(key)
                            .is_some_and(|v| globs.iter().any(|g| g.matches(v)))
                    })
                })
            })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(Glob::new("app").matches("app"));
        assert!(!Glob::new("app").matches("app2"));
        assert!(Glob::new("app*").matches("app2"));
        assert!(Glob::new("*").matches(""));
        assert!(Glob::new("a?c").matches("abc"));
        assert!(!Glob::new("a?c").matches("ac"));
        assert!(Glob::new("/kubepods/*/pod12*").matches("/kubepods/burstable/pod1234/cri"));
        assert!(Glob::new("*a*b").matches("xxaxxab"));
        assert!(!Glob::new("*a*b").matches("xxaxxa"));
    }

    #[test]
    fn selector_needs_every_list_and_unknown_attributes_do_not_match() {
        let selector = Selector {
            user: Some(vec![Glob::new("alice"), Glob::new("ops-*")]),
            workload: Some(vec![Glob::new("/batch/*")]),
            ..Selector::default()
        };
        let mut session = SessionIdentity {
            user: Some("ops-bob".into()),
            workload: Some("/batch/job1".into()),
            ..Default::default()
        };
        assert!(selector.matches(&session));
        session.workload = None;
        assert!(!selector.matches(&session));
        assert!(Selector::default().matches(&session));
    }

    #[test]
    fn kubernetes_selectors_match_the_pod_and_nothing_else() {
        use std::{collections::BTreeMap, sync::Arc};
        let selector = Selector {
            namespace: Some(vec![Glob::new("shop")]),
            service_account: Some(vec![Glob::new("api-*")]),
            labels: Some(vec![(
                "tier".into(),
                vec![Glob::new("web"), Glob::new("edge-*")],
            )]),
            ..Selector::default()
        };
        assert!(!selector.is_unconditional());
        let pod = PodIdentity {
            namespace: "shop".into(),
            pod: "api-7d9".into(),
            service_account: "api-reader".into(),
            labels: BTreeMap::from([("tier".into(), "edge-1".into())]),
            ..PodIdentity::default()
        };
        let mut session = SessionIdentity {
            pod: Some(Arc::new(pod.clone())),
            ..Default::default()
        };
        assert!(selector.matches(&session));
        // Another namespace, another account, a missing or different label.
        for change in [
            |p: &mut PodIdentity| p.namespace = "shop-staging".into(),
            |p: &mut PodIdentity| p.service_account = "default".into(),
            |p: &mut PodIdentity| p.labels.clear(),
            |p: &mut PodIdentity| {
                p.labels.insert("tier".into(), "db".into());
            },
        ] {
            let mut other = pod.clone();
            change(&mut other);
            session.pod = Some(Arc::new(other));
            assert!(!selector.matches(&session), "{:?}", session.pod);
        }
        // A session from no pod (hoop exec, a static cgroup) is not selected.
        session.pod = None;
        assert!(!selector.matches(&session));
        let by_name = Selector {
            pod: Some(vec![Glob::new("api-*")]),
            ..Selector::default()
        };
        session.pod = Some(Arc::new(pod));
        assert!(by_name.matches(&session));
    }

    #[test]
    fn user_is_the_injected_role_when_hoop_logged_in() {
        let selector = Selector {
            user: Some(vec![Glob::new("reporting_ro")]),
            ..Selector::default()
        };
        let mut session = SessionIdentity {
            user: Some("reporting_ro".into()),
            ..Default::default()
        };
        assert!(selector.matches(&session));
        // The client claimed `reporting_ro` but hoop logged in as another role.
        session.injected_role = Some("etl".into());
        assert!(!selector.matches(&session));
        session.user = Some("anything".into());
        session.injected_role = Some("reporting_ro".into());
        assert!(selector.matches(&session));
    }
}
