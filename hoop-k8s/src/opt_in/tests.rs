//! The opt-in table: every combination of the four places `hoop.dev/govern`
//! can sit, with every kind of value, plus the exclusions and the per-pod keys.
#![expect(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]

use std::collections::BTreeMap;

use super::*;

/// A value at one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum V {
    Absent,
    True,
    Enabled,
    False,
    Disabled,
    Invalid,
}

const VALUES: [V; 6] = [
    V::Absent,
    V::True,
    V::Enabled,
    V::False,
    V::Disabled,
    V::Invalid,
];

impl V {
    fn text(self) -> Option<&'static str> {
        match self {
            V::Absent => None,
            V::True => Some("true"),
            V::Enabled => Some("Enabled"),
            V::False => Some("FALSE"),
            V::Disabled => Some("disabled"),
            V::Invalid => Some("yes please"),
        }
    }
}

fn map(v: V) -> BTreeMap<String, String> {
    v.text()
        .map(|t| BTreeMap::from([(GOVERN_KEY.to_owned(), t.to_owned())]))
        .unwrap_or_default()
}

fn rules() -> OptInRules {
    OptInRules {
        exclude_namespaces: vec!["kube-system".into()],
        agent_namespace: Some("hoop-system".into()),
        agent_pod_uid: Some("agent-uid".into()),
        default_ports: vec![5432],
    }
}

struct Case {
    pod_label: V,
    pod_annotation: V,
    ns_label: V,
    ns_annotation: V,
}

fn run(case: &Case, namespace: &str) -> Evaluation {
    let (pl, pa, nl, na) = (
        map(case.pod_label),
        map(case.pod_annotation),
        map(case.ns_label),
        map(case.ns_annotation),
    );
    let pod = PodFacts {
        namespace,
        uid: "u-1",
        labels: &pl,
        annotations: &pa,
        host_network: false,
        phase: Some("Running"),
    };
    let ns = NamespaceFacts {
        labels: &nl,
        annotations: &na,
    };
    evaluate(&pod, Some(&ns), &rules())
}

/// Expected outcome of a hand-written row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    Govern(Source),
    GovernInvalid(Source),
    OptOut(Source),
    NotOptedIn,
}

fn outcome(e: &Evaluation) -> Want {
    match (&e.decision, e.invalid.as_slice()) {
        (Decision::Govern(g), []) => Want::Govern(g.source),
        (Decision::Govern(g), [bad]) => {
            assert_eq!(bad.key, GOVERN_KEY);
            assert_eq!(
                bad.source, g.source,
                "the invalid value is the deciding one"
            );
            Want::GovernInvalid(g.source)
        }
        (Decision::Skip(SkipReason::OptedOut(s)), []) => Want::OptOut(*s),
        (Decision::Skip(SkipReason::NotOptedIn), []) => Want::NotOptedIn,
        other => panic!("unexpected evaluation {other:?}"),
    }
}

#[test]
fn hand_written_precedence_rows() {
    use Source::*;
    use V::*;
    #[rustfmt::skip]
    let rows: &[(V, V, V, V, Want)] = &[
        // pod label, pod annotation, ns label, ns annotation → outcome
        (Absent,  Absent,   Absent,   Absent,   Want::NotOptedIn),
        (True,    Absent,   Absent,   Absent,   Want::Govern(PodLabel)),
        (Absent,  Enabled,  Absent,   Absent,   Want::Govern(PodAnnotation)),
        (Absent,  Absent,   True,     Absent,   Want::Govern(NamespaceLabel)),
        (Absent,  Absent,   Absent,   Enabled,  Want::Govern(NamespaceAnnotation)),
        // The pod beats the namespace, both ways.
        (Absent,  False,    True,     Absent,   Want::OptOut(PodAnnotation)),
        (Disabled,Absent,   Absent,   True,     Want::OptOut(PodLabel)),
        (Absent,  True,     False,    Absent,   Want::Govern(PodAnnotation)),
        (True,    Absent,   Absent,   Disabled, Want::Govern(PodLabel)),
        // The label beats the annotation, at both levels.
        (False,   True,     Absent,   Absent,   Want::OptOut(PodLabel)),
        (True,    False,    Absent,   Absent,   Want::Govern(PodLabel)),
        (Absent,  Absent,   Disabled, Enabled,  Want::OptOut(NamespaceLabel)),
        (Absent,  Absent,   Enabled,  False,    Want::Govern(NamespaceLabel)),
        // Invalid values govern (fail closed), wherever they decide...
        (Invalid, False,    Absent,   Absent,   Want::GovernInvalid(PodLabel)),
        (Absent,  Invalid,  False,    Absent,   Want::GovernInvalid(PodAnnotation)),
        (Absent,  Absent,   Invalid,  False,    Want::GovernInvalid(NamespaceLabel)),
        (Absent,  Absent,   Absent,   Invalid,  Want::GovernInvalid(NamespaceAnnotation)),
        // ...and are ignored where something stronger decides.
        (False,   Invalid,  Invalid,  Invalid,  Want::OptOut(PodLabel)),
        (Absent,  Disabled, Invalid,  Absent,   Want::OptOut(PodAnnotation)),
    ];
    for &(pod_label, pod_annotation, ns_label, ns_annotation, want) in rows {
        let case = Case {
            pod_label,
            pod_annotation,
            ns_label,
            ns_annotation,
        };
        assert_eq!(
            outcome(&run(&case, "shop")),
            want,
            "pod label {pod_label:?}, pod annotation {pod_annotation:?}, \
             namespace label {ns_label:?}, namespace annotation {ns_annotation:?}"
        );
    }
}

/// Every one of the 6^4 combinations: the first present place decides, and
/// its value alone says govern, opt out, or govern-with-a-warning.
#[test]
fn every_combination_follows_first_present_place() {
    let sources = [
        Source::PodLabel,
        Source::PodAnnotation,
        Source::NamespaceLabel,
        Source::NamespaceAnnotation,
    ];
    let mut seen = 0;
    for &pod_label in &VALUES {
        for &pod_annotation in &VALUES {
            for &ns_label in &VALUES {
                for &ns_annotation in &VALUES {
                    let values = [pod_label, pod_annotation, ns_label, ns_annotation];
                    let want = match values.iter().position(|v| *v != V::Absent) {
                        None => Want::NotOptedIn,
                        Some(i) => match values[i] {
                            V::True | V::Enabled => Want::Govern(sources[i]),
                            V::False | V::Disabled => Want::OptOut(sources[i]),
                            V::Invalid => Want::GovernInvalid(sources[i]),
                            V::Absent => unreachable!(),
                        },
                    };
                    let case = Case {
                        pod_label,
                        pod_annotation,
                        ns_label,
                        ns_annotation,
                    };
                    assert_eq!(outcome(&run(&case, "shop")), want, "{values:?}");
                    // Excluded namespaces and the agent's own namespace are
                    // skipped whatever the values say.
                    assert_eq!(
                        run(&case, "kube-system").decision,
                        Decision::Skip(SkipReason::ExcludedNamespace)
                    );
                    assert_eq!(
                        run(&case, "hoop-system").decision,
                        Decision::Skip(SkipReason::AgentPod)
                    );
                    seen += 1;
                }
            }
        }
    }
    assert_eq!(seen, 1296);
}

fn pod_with(
    annotations: &[(&str, &str)],
    labels: &[(&str, &str)],
) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let a = annotations
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let l = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    (a, l)
}

fn eval_pod(
    annotations: &BTreeMap<String, String>,
    labels: &BTreeMap<String, String>,
    uid: &str,
    phase: Option<&str>,
    host_network: bool,
) -> Evaluation {
    let pod = PodFacts {
        namespace: "shop",
        uid,
        labels,
        annotations,
        host_network,
        phase,
    };
    evaluate(&pod, None, &rules())
}

#[test]
fn agent_pod_uid_and_finished_pods_are_skipped() {
    let (a, l) = pod_with(&[(GOVERN_KEY, "true")], &[]);
    assert_eq!(
        eval_pod(&a, &l, "agent-uid", Some("Running"), false).decision,
        Decision::Skip(SkipReason::AgentPod)
    );
    for phase in ["Succeeded", "Failed"] {
        assert_eq!(
            eval_pod(&a, &l, "u", Some(phase), false).decision,
            Decision::Skip(SkipReason::Finished)
        );
    }
    for phase in [None, Some("Pending"), Some("Running"), Some("Unknown")] {
        assert!(matches!(
            eval_pod(&a, &l, "u", phase, false).decision,
            Decision::Govern(_)
        ));
    }
}

#[test]
fn an_unknown_namespace_counts_only_the_pod() {
    let (a, l) = pod_with(&[], &[]);
    assert_eq!(
        eval_pod(&a, &l, "u", None, false).decision,
        Decision::Skip(SkipReason::NotOptedIn)
    );
}

#[test]
fn ports_annotation_overrides_the_default_ports() {
    let (a, l) = pod_with(
        &[(GOVERN_KEY, "true"), (PORTS_KEY, " 6432, 3306 6432")],
        &[],
    );
    let e = eval_pod(&a, &l, "u", None, true);
    let Decision::Govern(g) = e.decision else {
        panic!("governed")
    };
    assert_eq!(g.ports, [3306, 6432]);
    assert!(g.host_network);
    assert!(!g.require);
    assert!(e.invalid.is_empty());

    let (a, l) = pod_with(&[(GOVERN_KEY, "true")], &[]);
    let Decision::Govern(g) = eval_pod(&a, &l, "u", None, false).decision else {
        panic!("governed")
    };
    assert_eq!(g.ports, [5432]);
}

#[test]
fn invalid_ports_fail_closed_to_defaults_plus_valid_entries() {
    for (value, want) in [
        ("3306,abc", vec![3306, 5432]),
        ("0", vec![5432]),
        ("", vec![5432]),
        ("70000, 6432", vec![5432, 6432]),
    ] {
        let (a, l) = pod_with(&[(GOVERN_KEY, "true"), (PORTS_KEY, value)], &[]);
        let e = eval_pod(&a, &l, "u", None, false);
        let Decision::Govern(g) = &e.decision else {
            panic!("governed")
        };
        assert_eq!(g.ports, want, "{value:?}");
        assert_eq!(e.invalid.len(), 1, "{value:?}");
        assert_eq!(e.invalid[0].key, PORTS_KEY);
        assert!(e.invalid[0].to_string().contains("fail closed"));
    }
    let many: Vec<String> = (1..=65).map(|p| p.to_string()).collect();
    assert_eq!(parse_ports(&many.join(",")).unwrap_err().len(), MAX_PORTS);
}

#[test]
fn require_annotation() {
    for (value, require, invalid) in [
        ("true", true, 0),
        ("Enabled", true, 0),
        ("false", false, 0),
        ("maybe", true, 1),
    ] {
        let (a, l) = pod_with(&[(GOVERN_KEY, "true"), (REQUIRE_KEY, value)], &[]);
        let e = eval_pod(&a, &l, "u", None, false);
        let Decision::Govern(g) = &e.decision else {
            panic!("governed")
        };
        assert_eq!(g.require, require, "{value:?}");
        assert_eq!(e.invalid.len(), invalid, "{value:?}");
    }
}

#[test]
fn invalid_value_message_says_what_happened() {
    let (a, l) = pod_with(&[], &[(GOVERN_KEY, "on")]);
    let e = eval_pod(&a, &l, "u", None, false);
    assert_eq!(
        e.invalid[0].to_string(),
        "pod label hoop.dev/govern=\"on\" is not valid; governing the pod (fail closed); \
         use true|enabled or false|disabled"
    );
    assert_eq!(e.invalid[0].source.level(), "pod");
}
