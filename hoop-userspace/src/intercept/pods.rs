//! Governing one pod: programs attached at its cgroup, hoop's listeners on
//! its own loopback, and its network namespace's redirect target pointing at
//! them. The Kubernetes reconciler's governor (`hoop-k8s`'s `PodGovernor`,
//! implemented by the agent) drives this; the agent serves the listeners it
//! hands back and dials upstream through [`netns::NetnsSockets::connect`]
//! with the pod's namespace.
//!
//! Order matters, and is chosen to fail closed:
//! - **govern**: attach first — from then on the pod's connects to
//!   intercepted ports are refused (no target yet) rather than let through —
//!   then find the pod's netns, bind the listeners there, and write the
//!   target, which turns refusals into redirects;
//! - **release**: detach first (the pod is no longer governed, its connects
//!   go direct), then remove the target, then close the listeners.
//!
//! Every step is idempotent, so a retry after a partial failure converges.

use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use super::{
    AttachOutcome, InterceptError, Interceptor, ListenerTarget, TargetUpdate, cgroup,
    netns::{LoopbackListeners, NetNs, NetnsSockets, PodNetnsError, find_pod_netns},
};

/// Why a pod could not be governed or released.
#[derive(Debug, thiserror::Error)]
pub enum PodInterceptError {
    /// Attaching or detaching the programs failed.
    #[error("attaching hoop's programs to {}", cgroup.display())]
    Attach {
        /// The pod cgroup.
        cgroup: PathBuf,
        /// What failed.
        #[source]
        source: Box<InterceptError>,
    },
    /// The pod's network namespace is not there yet (no process in its
    /// cgroup): retry.
    #[error("finding the pod's network namespace")]
    Netns(#[source] PodNetnsError),
    /// The pod uses the host's network namespace, where hoop keeps no
    /// per-pod listener: its intercepted connects stay refused.
    #[error(
        "the pod shares the host's network namespace (hostNetwork): hoop does not listen there per pod, \
         so its connects to intercepted ports are refused"
    )]
    HostNetwork,
    /// Binding the listeners in the pod's namespace failed.
    #[error("binding hoop's listeners in the pod's network namespace")]
    Listen(#[source] std::io::Error),
    /// Writing or removing the redirect target failed.
    #[error("setting the pod's redirect target")]
    Target(#[source] Box<InterceptError>),
    /// A newer agent owns the pod's redirect target (rolling update): this
    /// agent's listeners are not used.
    #[error("a newer hoop agent governs this pod's network namespace")]
    OwnedByNewer,
}

/// What one governed pod holds.
#[derive(Debug)]
pub struct GovernedPod {
    /// The pod cgroup the programs are attached to.
    pub cgroup: PathBuf,
    /// Its cgroup id.
    pub cgroup_id: u64,
    /// The pod's network namespace (held open).
    pub netns: Arc<NetNs>,
    /// The namespace's cookie: key of its redirect target and of the
    /// original-destination lookups for connections on its listeners.
    pub netns_cookie: u64,
    /// The intercepted ports (`None`: the default set).
    pub ports: Option<Vec<u16>>,
}

/// The result of [`PodInterception::govern`].
#[derive(Debug)]
pub enum Governed {
    /// Nothing changed (same cgroup and ports as before).
    Unchanged,
    /// Ports changed on an already governed pod; its listeners stay.
    Updated,
    /// Newly governed: serve these listeners (accepted connections on them
    /// belong to this pod; look their destination up with
    /// [`Interceptor::original_destination_in`] and the cookie).
    New {
        /// hoop's listeners in the pod's netns.
        listeners: LoopbackListeners,
        /// The pod's namespace, for upstream connects.
        netns: Arc<NetNs>,
    },
}

/// Governs pods: attach, listen in their namespaces, redirect there.
pub struct PodInterception {
    interceptor: Arc<Interceptor>,
    sockets: NetnsSockets,
    host_netns: Option<NetNs>,
    pods: Mutex<HashMap<String, GovernedPod>>,
    /// Pods attached by a govern that did not finish (no netns yet, bind
    /// failed…): refused until a retry finishes, detached on release.
    partial: Mutex<HashMap<String, u64>>,
}

impl std::fmt::Debug for PodInterception {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodInterception")
            .field("pods", &self.lock().len())
            .finish_non_exhaustive()
    }
}

impl PodInterception {
    /// `host_netns`: the node's network namespace (`/proc/1/ns/net` with
    /// `hostPID`), to recognise `hostNetwork` pods; `None` in tests that
    /// have no such distinction.
    pub fn new(
        interceptor: Arc<Interceptor>,
        sockets: NetnsSockets,
        host_netns: Option<NetNs>,
    ) -> Self {
        Self {
            interceptor,
            sockets,
            host_netns,
            pods: Mutex::new(HashMap::new()),
            partial: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, GovernedPod>> {
        self.pods.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_partial(&self) -> MutexGuard<'_, HashMap<String, u64>> {
        self.partial.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The interceptor.
    pub fn interceptor(&self) -> &Arc<Interceptor> {
        &self.interceptor
    }

    /// The socket factory (for upstream connects from pod namespaces).
    pub fn sockets(&self) -> &NetnsSockets {
        &self.sockets
    }

    /// Governs the pod `uid` at `cgroup_dir` with `ports` (`None`: the
    /// default set). Idempotent.
    pub async fn govern(
        &self,
        uid: &str,
        cgroup_dir: &Path,
        ports: Option<&[u16]>,
    ) -> Result<Governed, PodInterceptError> {
        let attach_err = |source| PodInterceptError::Attach {
            cgroup: cgroup_dir.to_owned(),
            source: Box::new(source),
        };
        let cgroup_id = cgroup::cgroup_id(cgroup_dir).map_err(attach_err)?;
        let existing = self
            .lock()
            .get(uid)
            .map(|p| (p.cgroup_id, p.ports.clone(), p.netns_cookie));
        if let Some((id, old_ports, cookie)) = &existing
            && *id == cgroup_id
        {
            // Re-assert the attachment (repairs a detach behind our back).
            self.interceptor.attach(cgroup_dir).map_err(attach_err)?;
            if old_ports.as_deref() == ports {
                return Ok(Governed::Unchanged);
            }
            let (target, _) = self
                .interceptor
                .target(*cookie)
                .map_err(|e| PodInterceptError::Target(Box::new(e)))?
                .ok_or(PodInterceptError::OwnedByNewer)?;
            let target = ListenerTarget {
                ports: ports.map(<[u16]>::to_vec),
                ..target
            };
            self.write_target(*cookie, &target)?;
            if let Some(p) = self.lock().get_mut(uid) {
                p.ports = ports.map(<[u16]>::to_vec);
            }
            return Ok(Governed::Updated);
        }
        let stale_partial = self
            .lock_partial()
            .get(uid)
            .is_some_and(|id| *id != cgroup_id);
        if existing.is_some() || stale_partial {
            // Same pod, another cgroup (recreated): start over.
            self.release(uid)?;
        }

        // Fail closed from here: attached without a target means refused.
        let outcome = self.interceptor.attach(cgroup_dir).map_err(attach_err)?;
        self.lock_partial().insert(uid.to_owned(), cgroup_id);
        let found = find_pod_netns(cgroup_dir).map_err(PodInterceptError::Netns)?;
        if self
            .host_netns
            .as_ref()
            .is_some_and(|h| h.same_as(&found.netns))
        {
            return Err(PodInterceptError::HostNetwork);
        }
        let netns = Arc::new(found.netns);
        let listeners = self
            .sockets
            .bind_loopback(&netns, 0, 0)
            .await
            .map_err(PodInterceptError::Listen)?;
        let target = ListenerTarget {
            v4: Some(listeners.v4_addr().map_err(PodInterceptError::Listen)?),
            v6: listeners.v6_addr().map_err(PodInterceptError::Listen)?,
            ports: ports.map(<[u16]>::to_vec),
        };
        self.write_target(listeners.netns_cookie, &target)?;
        log::debug!(
            "hoop: pod {uid} governed at {} ({:?}), listening on {:?} in netns {}",
            cgroup_dir.display(),
            outcome == AttachOutcome::Adopted,
            target.v4,
            netns.inode()
        );
        self.lock_partial().remove(uid);
        self.lock().insert(
            uid.to_owned(),
            GovernedPod {
                cgroup: cgroup_dir.to_owned(),
                cgroup_id,
                netns: netns.clone(),
                netns_cookie: listeners.netns_cookie,
                ports: ports.map(<[u16]>::to_vec),
            },
        );
        Ok(Governed::New { listeners, netns })
    }

    fn write_target(&self, cookie: u64, target: &ListenerTarget) -> Result<(), PodInterceptError> {
        match self
            .interceptor
            .set_target(cookie, target)
            .map_err(|e| PodInterceptError::Target(Box::new(e)))?
        {
            TargetUpdate::Written => Ok(()),
            TargetUpdate::OwnedByNewer => Err(PodInterceptError::OwnedByNewer),
        }
    }

    /// Stops governing the pod: detach, remove its target. Returns what it
    /// held (the caller closes its listeners), `None` if it was not
    /// governed here. A pod that a govern attached without finishing is
    /// detached too.
    pub fn release(&self, uid: &str) -> Result<Option<GovernedPod>, PodInterceptError> {
        let partial = self.lock_partial().remove(uid);
        let Some(pod) = self.lock().remove(uid) else {
            if let Some(cgroup_id) = partial {
                self.interceptor.detach_id(cgroup_id).map_err(|source| {
                    PodInterceptError::Attach {
                        cgroup: PathBuf::from(format!("cgroup id {cgroup_id}")),
                        source: Box::new(source),
                    }
                })?;
            }
            return Ok(None);
        };
        self.interceptor
            .detach_id(pod.cgroup_id)
            .map_err(|source| PodInterceptError::Attach {
                cgroup: pod.cgroup.clone(),
                source: Box::new(source),
            })?;
        self.interceptor
            .remove_target(pod.netns_cookie)
            .map_err(|e| PodInterceptError::Target(Box::new(e)))?;
        Ok(Some(pod))
    }

    /// Forgets the pod's listeners but keeps it attached: its redirect
    /// target is removed, so its intercepted connects are refused (never
    /// let through) until a later [`PodInterception::govern`] binds new
    /// listeners. For a caller that could not serve the listeners it got.
    pub fn unlisten(&self, uid: &str) -> Result<(), PodInterceptError> {
        let Some(pod) = self.lock().remove(uid) else {
            return Ok(());
        };
        self.lock_partial().insert(uid.to_owned(), pod.cgroup_id);
        self.interceptor
            .remove_target(pod.netns_cookie)
            .map_err(|e| PodInterceptError::Target(Box::new(e)))?;
        Ok(())
    }

    /// Releases every governed pod not in `keep`, and every cgroup adopted
    /// from a previous agent that no pod claimed. Returns the released UIDs.
    pub fn retain(&self, keep: &HashSet<String>) -> Vec<String> {
        let mut gone: Vec<String> = self
            .lock()
            .keys()
            .filter(|uid| !keep.contains(*uid))
            .cloned()
            .collect();
        gone.extend(
            self.lock_partial()
                .keys()
                .filter(|uid| !keep.contains(*uid))
                .cloned(),
        );
        for uid in &gone {
            if let Err(e) = self.release(uid) {
                log::warn!("hoop: releasing pod {uid}: {e}");
            }
        }
        self.interceptor.release_unclaimed();
        gone
    }

    /// The governed pod `uid`'s namespace cookie and namespace.
    pub fn pod_netns(&self, uid: &str) -> Option<(u64, Arc<NetNs>)> {
        self.lock()
            .get(uid)
            .map(|p| (p.netns_cookie, p.netns.clone()))
    }

    /// UIDs of the governed pods.
    pub fn governed(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }
}
