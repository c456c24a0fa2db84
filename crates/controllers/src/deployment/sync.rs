//! One sync of a Deployment: find or create the new ReplicaSet, scale, roll (RollingUpdate
//! or Recreate), clean up old revisions and publish status, as upstream's `sync.go`,
//! `rolling.go`, `recreate.go` and `progress.go`.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, DeleteParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};

use super::util::{self, reason};
use super::{Ctrl, claim_replica_sets};
use crate::pods::{controller_of, controller_ref};
use crate::replicaset::{Error, api_code, api_message, post_params};
use crate::workloads::selector_is_empty;

/// The state of one sync: the Deployment and its ReplicaSets as last written.
pub(super) struct Rollout<'a> {
    ctrl: &'a Ctrl,
    d: Deployment,
    sets: Vec<ReplicaSet>,
    requeue: Option<Duration>,
    now: jiff::Timestamp,
}

fn active(sets: impl IntoIterator<Item = ReplicaSet>) -> Vec<ReplicaSet> {
    sets.into_iter()
        .filter(|rs| util::rs_replicas(rs) > 0)
        .collect()
}

fn with_new(old: &[ReplicaSet], new: Option<&ReplicaSet>) -> Vec<ReplicaSet> {
    old.iter().cloned().chain(new.cloned()).collect()
}

impl<'a> Rollout<'a> {
    pub(super) fn new(ctrl: &'a Ctrl, d: Deployment) -> Self {
        Self {
            ctrl,
            d,
            sets: Vec::new(),
            requeue: None,
            now: jiff::Timestamp::now(),
        }
    }

    /// When to sync again without a change.
    pub(super) fn action(&self) -> Action {
        self.requeue
            .map_or_else(Action::await_change, Action::requeue)
    }

    fn namespace(&self) -> String {
        self.d.namespace().unwrap_or_default()
    }

    fn name(&self) -> String {
        self.d.name_any()
    }

    fn sets_api(&self) -> Api<ReplicaSet> {
        Api::namespaced(self.ctrl.ctx.client.clone(), &self.namespace())
    }

    fn api(&self) -> Api<Deployment> {
        Api::namespaced(self.ctrl.ctx.client.clone(), &self.namespace())
    }

    fn time(&self) -> Time {
        Time(self.now)
    }

    fn status(&self) -> DeploymentStatus {
        self.d.status.clone().unwrap_or_default()
    }

    fn requeue_after(&mut self, after: Duration) {
        self.requeue = Some(self.requeue.map_or(after, |r| r.min(after)));
    }

    fn event(&self, type_: EventType, reason: &str, note: String) {
        self.ctrl
            .events
            .publish(self.d.object_ref(&()), type_, reason, note);
    }

    /// The latest written copies of `sets` (dropping any deleted since).
    fn refresh(&self, sets: &[ReplicaSet]) -> Vec<ReplicaSet> {
        sets.iter()
            .filter_map(|rs| {
                self.sets
                    .iter()
                    .find(|s| s.metadata.uid == rs.metadata.uid)
                    .cloned()
            })
            .collect()
    }

    fn refresh_one(&self, rs: Option<&ReplicaSet>) -> Option<ReplicaSet> {
        rs.and_then(|rs| self.refresh(std::slice::from_ref(rs)).pop())
    }

    /// The whole sync, as upstream's `syncDeployment`.
    pub(super) async fn sync(&mut self) -> Result<(), Error> {
        let selector = self
            .d
            .spec
            .as_ref()
            .map(|s| s.selector.clone())
            .unwrap_or_default();
        if selector_is_empty(&selector) {
            self.event(
                EventType::Warning,
                "SelectingAll",
                "This deployment is selecting all pods. A non-empty selector is required.".into(),
            );
            let generation = self.d.metadata.generation.unwrap_or(0);
            if self.status().observed_generation.unwrap_or(0) < generation {
                let mut status = self.status();
                status.observed_generation = Some(generation);
                self.update_status(status).await?;
            }
            return Ok(());
        }
        self.sets = claim_replica_sets(self.ctrl, &self.d).await?;
        if self.d.metadata.deletion_timestamp.is_some() {
            let (new, old) = self.new_and_old(false).await?;
            return self.sync_deployment_status(&old, new.as_ref()).await;
        }
        self.check_paused_conditions().await?;
        if util::is_paused(&self.d) {
            return self.scale_only().await;
        }
        if self.is_scaling_event().await? {
            return self.scale_only().await;
        }
        if util::is_rolling_update(&self.d) {
            self.rollout_rolling().await
        } else {
            self.rollout_recreate().await
        }
    }

    /// Sets Progressing to DeploymentPaused or DeploymentResumed when `spec.paused` flips.
    async fn check_paused_conditions(&mut self) -> Result<(), Error> {
        if util::progress_deadline(&self.d).is_none() {
            return Ok(());
        }
        let mut status = self.status();
        let current_reason =
            util::get_condition(&status, "Progressing").and_then(|c| c.reason.clone());
        if current_reason.as_deref() == Some(reason::TIMED_OUT) {
            return Ok(());
        }
        let paused_condition = current_reason.as_deref() == Some(reason::PAUSED);
        let paused = util::is_paused(&self.d);
        let condition = if paused && !paused_condition {
            util::condition(
                "Progressing",
                "Unknown",
                reason::PAUSED,
                "Deployment is paused".into(),
                self.time(),
            )
        } else if !paused && paused_condition {
            util::condition(
                "Progressing",
                "Unknown",
                reason::RESUMED,
                "Deployment is resumed".into(),
                self.time(),
            )
        } else {
            return Ok(());
        };
        util::set_condition(&mut status, condition);
        self.update_status(status).await
    }

    /// Whether the Deployment was scaled since its active ReplicaSets were last sized.
    async fn is_scaling_event(&mut self) -> Result<bool, Error> {
        let (new, old) = self.new_and_old(false).await?;
        let desired = util::replicas(&self.d);
        Ok(active(with_new(&old, new.as_ref()))
            .iter()
            .filter_map(util::desired_replicas_annotation)
            .any(|annotated| annotated != desired))
    }

    /// Scaling without rolling (paused Deployments and scaling events), as upstream's
    /// `sync`.
    async fn scale_only(&mut self) -> Result<(), Error> {
        let (new, old) = self.new_and_old(false).await?;
        self.scale(new.as_ref(), &old).await?;
        if util::is_paused(&self.d) {
            let old = self.refresh(&old);
            self.cleanup(&old).await?;
        }
        let (new, old) = (self.refresh_one(new.as_ref()), self.refresh(&old));
        self.sync_deployment_status(&old, new.as_ref()).await
    }

    /// Splits the ReplicaSets into the one matching the template (brought up to date, or
    /// created when `create`) and the old ones, as upstream's
    /// `getAllReplicaSetsAndSyncRevision`.
    async fn new_and_old(
        &mut self,
        create: bool,
    ) -> Result<(Option<ReplicaSet>, Vec<ReplicaSet>), Error> {
        let mut sorted = self.sets.clone();
        sorted.sort_by(util::by_creation);
        let template = self
            .d
            .spec
            .as_ref()
            .map(|s| s.template.clone())
            .unwrap_or_default();
        let existing = sorted
            .iter()
            .position(|rs| {
                rs.spec
                    .as_ref()
                    .and_then(|s| s.template.as_ref())
                    .is_some_and(|t| util::equal_ignore_hash(t, &template))
            })
            .map(|i| sorted.remove(i));
        let new = self.new_replica_set(existing, &sorted, create).await?;
        Ok((new, sorted))
    }

    async fn new_replica_set(
        &mut self,
        existing: Option<ReplicaSet>,
        old: &[ReplicaSet],
        create: bool,
    ) -> Result<Option<ReplicaSet>, Error> {
        let new_revision = util::max_revision(old) + 1;
        let min_ready = util::min_ready_seconds(&self.d);
        if let Some(existing) = existing {
            let mut copy = existing.clone();
            let annotations_updated =
                util::set_new_rs_annotations(&self.d, &mut copy, new_revision, true);
            let spec = copy.spec.get_or_insert_with(Default::default);
            let min_ready_update = spec.min_ready_seconds.unwrap_or(0) != min_ready;
            if annotations_updated || min_ready_update {
                spec.min_ready_seconds = Some(min_ready);
                copy = self.replace_set(copy).await?;
            }
            let revision = copy
                .annotations()
                .get(util::REVISION)
                .cloned()
                .unwrap_or_default();
            self.set_deployment_revision(&revision).await?;
            let mut status = self.status();
            if util::progress_deadline(&self.d).is_some()
                && util::get_condition(&status, "Progressing").is_none()
            {
                util::set_condition(
                    &mut status,
                    util::condition(
                        "Progressing",
                        "True",
                        reason::FOUND_NEW_RS,
                        format!("Found new replica set {:?}", copy.name_any()),
                        self.time(),
                    ),
                );
                self.update_status(status).await?;
            }
            return Ok(Some(copy));
        }
        if !create {
            return Ok(None);
        }

        let spec = self.d.spec.clone().unwrap_or_default();
        let collision_count = self.status().collision_count;
        let hash = util::compute_hash(&spec.template, collision_count);
        let mut template = spec.template.clone();
        let template_meta = template.metadata.get_or_insert_with(Default::default);
        template_meta
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(util::POD_TEMPLATE_HASH.into(), hash.clone());
        let labels = template_meta.labels.clone();
        let mut selector = spec.selector.clone();
        selector
            .match_labels
            .get_or_insert_with(BTreeMap::new)
            .insert(util::POD_TEMPLATE_HASH.into(), hash.clone());
        let mut new_rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(format!("{}-{hash}", self.name())),
                namespace: Some(self.namespace()),
                owner_references: Some(vec![controller_ref(&self.d)]),
                labels,
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(0),
                min_ready_seconds: Some(min_ready),
                selector,
                template: Some(template),
            }),
            status: None,
        };
        let all: Vec<&ReplicaSet> = old.iter().chain([&new_rs]).collect();
        let new_replicas = util::new_rs_new_replicas(&self.d, &all, &new_rs);
        if let Some(spec) = new_rs.spec.as_mut() {
            spec.replicas = Some(new_replicas);
        }
        util::set_new_rs_annotations(&self.d, &mut new_rs, new_revision, false);

        let (created, already_existed) = match self.sets_api().create(&post_params(), &new_rs).await
        {
            Ok(created) => (created, false),
            Err(e) if api_code(&e) == Some(409) => {
                let found = self.sets_api().get(&new_rs.name_any()).await?;
                let ours = controller_of(&found.metadata)
                    .is_some_and(|r| Some(&r.uid) == self.d.metadata.uid.as_ref());
                let same = found
                    .spec
                    .as_ref()
                    .and_then(|s| s.template.as_ref())
                    .is_some_and(|t| util::equal_ignore_hash(t, &spec.template));
                if !(ours && same) {
                    // A hash collision: the next name comes from a higher collision count.
                    let mut status = self.status();
                    status.collision_count = Some(status.collision_count.unwrap_or(0) + 1);
                    self.update_status(status).await?;
                    return Err(e.into());
                }
                (found, true)
            }
            Err(e) => {
                if util::progress_deadline(&self.d).is_some() {
                    let mut status = self.status();
                    util::set_condition(
                        &mut status,
                        util::condition(
                            "Progressing",
                            "False",
                            reason::FAILED_RS_CREATE,
                            format!(
                                "Failed to create new replica set {:?}: {}",
                                new_rs.name_any(),
                                api_message(&e)
                            ),
                            self.time(),
                        ),
                    );
                    self.update_status(status).await?;
                }
                return Err(e.into());
            }
        };
        if !already_existed && new_replicas > 0 {
            self.event(
                EventType::Normal,
                "ScalingReplicaSet",
                format!(
                    "Scaled up replica set {} from 0 to {new_replicas}",
                    created.name_any()
                ),
            );
        }
        self.remember(created.clone());
        self.set_deployment_revision(&new_revision.to_string())
            .await?;
        if !already_existed && util::progress_deadline(&self.d).is_some() {
            let mut status = self.status();
            util::set_condition(
                &mut status,
                util::condition(
                    "Progressing",
                    "True",
                    reason::NEW_RS_CREATED,
                    format!("Created new replica set {:?}", created.name_any()),
                    self.time(),
                ),
            );
            self.update_status(status).await?;
        }
        Ok(Some(created))
    }

    /// Records a written ReplicaSet in this sync's view.
    fn remember(&mut self, rs: ReplicaSet) {
        match self
            .sets
            .iter_mut()
            .find(|s| s.metadata.uid == rs.metadata.uid)
        {
            Some(slot) => *slot = rs,
            None => self.sets.push(rs),
        }
    }

    async fn replace_set(&mut self, rs: ReplicaSet) -> Result<ReplicaSet, Error> {
        let written = self
            .sets_api()
            .replace(&rs.name_any(), &post_params(), &rs)
            .await?;
        self.remember(written.clone());
        Ok(written)
    }

    /// Sets the Deployment's revision annotation (a metadata update: the generation stays).
    async fn set_deployment_revision(&mut self, revision: &str) -> Result<(), Error> {
        if self.d.annotations().get(util::REVISION).map(String::as_str) == Some(revision) {
            return Ok(());
        }
        let mut copy = self.d.clone();
        copy.annotations_mut()
            .insert(util::REVISION.into(), revision.to_owned());
        self.d = self
            .api()
            .replace(&self.name(), &post_params(), &copy)
            .await?;
        Ok(())
    }

    async fn update_status(&mut self, status: DeploymentStatus) -> Result<(), Error> {
        let mut copy = self.d.clone();
        copy.status = Some(status);
        self.d = self
            .api()
            .replace_status(&self.name(), &post_params(), &copy)
            .await?;
        Ok(())
    }

    /// Resizes a ReplicaSet (and its replica annotations); records a ScalingReplicaSet event
    /// when the size changed.
    async fn scale_set(
        &mut self,
        rs: &ReplicaSet,
        new_scale: i32,
        operation: &str,
    ) -> Result<(bool, ReplicaSet), Error> {
        let desired = util::replicas(&self.d);
        let max = desired + util::max_surge(&self.d);
        let old_scale = util::rs_replicas(rs);
        let size_changes = old_scale != new_scale;
        if !size_changes && !util::replicas_annotations_need_update(rs, desired, max) {
            return Ok((false, rs.clone()));
        }
        let mut copy = rs.clone();
        copy.spec.get_or_insert_with(Default::default).replicas = Some(new_scale);
        util::set_replicas_annotations(&mut copy, desired, max);
        let written = self.replace_set(copy).await?;
        if size_changes {
            self.event(
                EventType::Normal,
                "ScalingReplicaSet",
                format!(
                    "Scaled {operation} replica set {} from {old_scale} to {new_scale}",
                    rs.name_any()
                ),
            );
        }
        Ok((size_changes, written))
    }

    async fn scale_set_and_record(
        &mut self,
        rs: &ReplicaSet,
        new_scale: i32,
    ) -> Result<(bool, ReplicaSet), Error> {
        let current = util::rs_replicas(rs);
        if current == new_scale {
            return Ok((false, rs.clone()));
        }
        let operation = if current < new_scale { "up" } else { "down" };
        self.scale_set(rs, new_scale, operation).await
    }

    /// Sizes the ReplicaSets for `spec.replicas`, proportionally during a rollout, as
    /// upstream's `scale`.
    async fn scale(&mut self, new: Option<&ReplicaSet>, old: &[ReplicaSet]) -> Result<(), Error> {
        let desired = util::replicas(&self.d);
        if let Some(target) = active_or_latest(new, old) {
            if util::rs_replicas(&target) != desired {
                self.scale_set_and_record(&target, desired).await?;
            }
            return Ok(());
        }
        if util::is_saturated(&self.d, new) {
            for rs in active(old.to_vec()) {
                self.scale_set_and_record(&rs, 0).await?;
            }
            return Ok(());
        }
        if !util::is_rolling_update(&self.d) {
            return Ok(());
        }
        let mut all = active(with_new(old, new));
        let allowed = if desired > 0 {
            desired + util::max_surge(&self.d)
        } else {
            0
        };
        let to_add = allowed - util::spec_replica_count(&all);
        let operation = match to_add.cmp(&0) {
            Ordering::Greater => {
                all.sort_by(|a, b| util::by_size(a, b, true));
                "up"
            }
            Ordering::Less => {
                all.sort_by(|a, b| util::by_size(a, b, false));
                "down"
            }
            Ordering::Equal => "",
        };
        let mut added = 0;
        let mut sizes = Vec::with_capacity(all.len());
        for rs in &all {
            let p = util::proportion(rs, &self.d, to_add, added);
            sizes.push(util::rs_replicas(rs) + p);
            added += p;
        }
        for (i, rs) in all.iter().enumerate() {
            let mut size = sizes[i];
            // Leftovers go to the largest ReplicaSet.
            if i == 0 && to_add != 0 {
                size = (size + to_add - added).max(0);
            }
            self.scale_set(rs, size, operation).await?;
        }
        Ok(())
    }

    /// Deletes the oldest fully scaled-down ReplicaSets beyond `revisionHistoryLimit`.
    async fn cleanup(&mut self, old: &[ReplicaSet]) -> Result<(), Error> {
        let Some(limit) = self.d.spec.as_ref().and_then(|s| s.revision_history_limit) else {
            return Ok(());
        };
        let mut cleanable: Vec<ReplicaSet> = self
            .refresh(old)
            .into_iter()
            .filter(|rs| rs.metadata.deletion_timestamp.is_none())
            .collect();
        let excess = cleanable.len() as i64 - i64::from(limit.max(0));
        if excess <= 0 {
            return Ok(());
        }
        cleanable.sort_by(util::by_revision);
        let api = self.sets_api();
        for rs in cleanable.iter().take(usize::try_from(excess).unwrap_or(0)) {
            let status = rs.status.clone().unwrap_or_default();
            if status.replicas != 0
                || util::rs_replicas(rs) != 0
                || rs.metadata.generation.unwrap_or(0) > status.observed_generation.unwrap_or(0)
            {
                continue;
            }
            match api.delete(&rs.name_any(), &DeleteParams::default()).await {
                Ok(_) => {}
                Err(e) if api_code(&e) == Some(404) => {}
                Err(e) => return Err(e.into()),
            }
            self.sets.retain(|s| s.metadata.uid != rs.metadata.uid);
        }
        Ok(())
    }

    /// Writes the status the ReplicaSets add up to, when it changed.
    async fn sync_deployment_status(
        &mut self,
        old: &[ReplicaSet],
        new: Option<&ReplicaSet>,
    ) -> Result<(), Error> {
        let all = with_new(old, new);
        let all: Vec<&ReplicaSet> = all.iter().collect();
        let status = util::calculate_status(&all, new, &self.d, self.time());
        if Some(&status) == self.d.status.as_ref() {
            return Ok(());
        }
        self.update_status(status).await
    }

    /// Status with progress estimation, as upstream's `syncRolloutStatus`.
    async fn sync_rollout_status(
        &mut self,
        old: &[ReplicaSet],
        new: Option<&ReplicaSet>,
    ) -> Result<(), Error> {
        let (old, new) = (self.refresh(old), self.refresh_one(new));
        let all = with_new(&old, new.as_ref());
        let all_refs: Vec<&ReplicaSet> = all.iter().collect();
        let mut status = util::calculate_status(&all_refs, new.as_ref(), &self.d, self.time());
        let deadline = util::progress_deadline(&self.d);
        if deadline.is_none() {
            util::remove_condition(&mut status, "Progressing");
        }
        let current = util::get_condition(&self.status(), "Progressing").cloned();
        let complete_before = status.replicas == status.updated_replicas
            && current
                .as_ref()
                .is_some_and(|c| c.reason.as_deref() == Some(reason::NEW_RS_AVAILABLE));
        if deadline.is_some() && !complete_before {
            let subject = match &new {
                Some(rs) => format!("ReplicaSet {:?}", rs.name_any()),
                None => format!("Deployment {:?}", self.name()),
            };
            if util::deployment_complete(&self.d, &status) {
                util::set_condition(
                    &mut status,
                    util::condition(
                        "Progressing",
                        "True",
                        reason::NEW_RS_AVAILABLE,
                        format!("{subject} has successfully progressed."),
                        self.time(),
                    ),
                );
            } else if util::deployment_progressing(&self.d, &status) {
                let mut condition = util::condition(
                    "Progressing",
                    "True",
                    reason::RS_UPDATED,
                    format!("{subject} is progressing."),
                    self.time(),
                );
                if let Some(current) = &current {
                    if current.status == "True" {
                        condition.last_transition_time = current.last_transition_time.clone();
                    }
                    util::remove_condition(&mut status, "Progressing");
                }
                util::set_condition(&mut status, condition);
            } else if util::deployment_timed_out(&self.d, &status, self.now) {
                util::set_condition(
                    &mut status,
                    util::condition(
                        "Progressing",
                        "False",
                        reason::TIMED_OUT,
                        format!("{subject} has timed out progressing."),
                        self.time(),
                    ),
                );
            }
        }
        // The first ReplicaFailure among the ReplicaSets (the new one's first).
        let failure = new
            .iter()
            .chain(all.iter())
            .flat_map(|rs| rs.status.iter().flat_map(|s| s.conditions.iter().flatten()))
            .find(|c| c.type_ == "ReplicaFailure")
            .map(util::rs_condition_to_deployment);
        match failure {
            Some(condition) => util::set_condition(&mut status, condition),
            None => util::remove_condition(&mut status, "ReplicaFailure"),
        }
        if Some(&status) == self.d.status.as_ref() {
            self.requeue_stuck(&status);
            return Ok(());
        }
        self.update_status(status).await
    }

    /// Comes back when the progress deadline of a rollout without progress passes.
    fn requeue_stuck(&mut self, status: &DeploymentStatus) {
        let Some(deadline) = util::progress_deadline(&self.d) else {
            return;
        };
        let Some(current) = util::get_condition(&self.status(), "Progressing").cloned() else {
            return;
        };
        if util::deployment_complete(&self.d, status)
            || current.reason.as_deref() == Some(reason::TIMED_OUT)
        {
            return;
        }
        let Some(updated) = current.last_update_time else {
            return;
        };
        let due = updated.0.as_second() + i64::from(deadline);
        let after = (due - self.now.as_second()).max(0);
        self.requeue_after(Duration::from_secs(u64::try_from(after).unwrap_or(0) + 1));
    }

    /// A RollingUpdate step, as upstream's `rolloutRolling`.
    async fn rollout_rolling(&mut self) -> Result<(), Error> {
        let (new, old) = self.new_and_old(true).await?;
        let Some(new) = new else {
            return Ok(());
        };
        let all = with_new(&old, Some(&new));
        if self.reconcile_new_set(&all, &new).await? {
            return self.sync_rollout_status(&old, Some(&new)).await;
        }
        let (all, old_active, new_now) = (
            self.refresh(&all),
            active(self.refresh(&old)),
            self.refresh_one(Some(&new)).unwrap_or(new.clone()),
        );
        if self.reconcile_old_sets(&all, old_active, &new_now).await? {
            return self.sync_rollout_status(&old, Some(&new)).await;
        }
        if util::deployment_complete(&self.d, &self.status()) {
            self.cleanup(&old).await?;
        }
        self.sync_rollout_status(&old, Some(&new)).await
    }

    async fn reconcile_new_set(
        &mut self,
        all: &[ReplicaSet],
        new: &ReplicaSet,
    ) -> Result<bool, Error> {
        let desired = util::replicas(&self.d);
        let current = util::rs_replicas(new);
        if current == desired {
            return Ok(false);
        }
        let target = if current > desired {
            desired
        } else {
            let refs: Vec<&ReplicaSet> = all.iter().collect();
            util::new_rs_new_replicas(&self.d, &refs, new)
        };
        Ok(self.scale_set_and_record(new, target).await?.0)
    }

    async fn reconcile_old_sets(
        &mut self,
        all: &[ReplicaSet],
        old: Vec<ReplicaSet>,
        new: &ReplicaSet,
    ) -> Result<bool, Error> {
        if util::spec_replica_count(&old) == 0 {
            return Ok(false);
        }
        let all_count = util::spec_replica_count(all);
        let min_available = util::replicas(&self.d) - util::max_unavailable(&self.d);
        let new_unavailable = util::rs_replicas(new) - util::rs_available(new);
        let max_scaled_down = all_count - min_available - new_unavailable;
        if max_scaled_down <= 0 {
            return Ok(false);
        }
        let (old, cleaned) = self.cleanup_unhealthy(old, max_scaled_down).await?;
        let all = with_new(&old, Some(new));
        let scaled = self.scale_down_old_for_rolling(&all, old).await?;
        Ok(cleaned + scaled > 0)
    }

    /// Scales down old ReplicaSets' unavailable pods first (they cost no availability).
    async fn cleanup_unhealthy(
        &mut self,
        mut old: Vec<ReplicaSet>,
        max_cleanup: i32,
    ) -> Result<(Vec<ReplicaSet>, i32), Error> {
        old.sort_by(util::by_creation);
        let mut total = 0;
        for rs in old.iter_mut() {
            if total >= max_cleanup {
                break;
            }
            let replicas = util::rs_replicas(rs);
            let available = util::rs_available(rs);
            if replicas == 0 || replicas == available {
                continue;
            }
            let count = (max_cleanup - total).min(replicas - available);
            let (_, written) = self.scale_set_and_record(rs, replicas - count).await?;
            *rs = written;
            total += count;
        }
        Ok((old, total))
    }

    async fn scale_down_old_for_rolling(
        &mut self,
        all: &[ReplicaSet],
        mut old: Vec<ReplicaSet>,
    ) -> Result<i32, Error> {
        let min_available = util::replicas(&self.d) - util::max_unavailable(&self.d);
        let available: i32 = all.iter().map(util::rs_available).sum();
        if available <= min_available {
            return Ok(0);
        }
        old.sort_by(util::by_creation);
        let total = available - min_available;
        let mut scaled = 0;
        for rs in &old {
            if scaled >= total {
                break;
            }
            let replicas = util::rs_replicas(rs);
            if replicas == 0 {
                continue;
            }
            let count = replicas.min(total - scaled);
            self.scale_set_and_record(rs, replicas - count).await?;
            scaled += count;
        }
        Ok(scaled)
    }

    /// A Recreate step, as upstream's `rolloutRecreate`: old pods all gone before the new
    /// ReplicaSet is created or scaled up.
    async fn rollout_recreate(&mut self) -> Result<(), Error> {
        let (new, old) = self.new_and_old(false).await?;
        let mut scaled_down = false;
        for rs in active(old.clone()) {
            scaled_down |= self.scale_set_and_record(&rs, 0).await?.0;
        }
        if scaled_down {
            return self.sync_rollout_status(&old, new.as_ref()).await;
        }
        if self.old_pods_running(new.as_ref(), &old) {
            return self.sync_rollout_status(&old, new.as_ref()).await;
        }
        let (new, old) = match new {
            Some(new) => (Some(new), old),
            None => self.new_and_old(true).await?,
        };
        if let Some(new) = &new {
            let desired = util::replicas(&self.d);
            self.scale_set_and_record(new, desired).await?;
        }
        if util::deployment_complete(&self.d, &self.status()) {
            self.cleanup(&old).await?;
        }
        self.sync_rollout_status(&old, new.as_ref()).await
    }

    /// Whether any pod of an old ReplicaSet may still be running.
    fn old_pods_running(&self, new: Option<&ReplicaSet>, old: &[ReplicaSet]) -> bool {
        let old = self.refresh(old);
        if old
            .iter()
            .any(|rs| rs.status.as_ref().is_some_and(|s| s.replicas > 0))
        {
            return true;
        }
        let new_uid = new.and_then(|rs| rs.metadata.uid.clone());
        let old_uids: HashSet<String> = old
            .iter()
            .filter_map(|rs| rs.metadata.uid.clone())
            .filter(|uid| Some(uid) != new_uid.as_ref())
            .collect();
        let namespace = self.namespace();
        self.ctrl.pods.state().iter().any(|pod| {
            pod.namespace().as_deref() == Some(namespace.as_str())
                && controller_of(&pod.metadata).is_some_and(|r| old_uids.contains(&r.uid))
                && !matches!(
                    pod.status.as_ref().and_then(|s| s.phase.as_deref()),
                    Some("Failed" | "Succeeded")
                )
        })
    }
}

/// With at most one active ReplicaSet, the one to size to `spec.replicas` (the active one,
/// else the new one, else the newest), as upstream's `FindActiveOrLatest`.
fn active_or_latest(new: Option<&ReplicaSet>, old: &[ReplicaSet]) -> Option<ReplicaSet> {
    if new.is_none() && old.is_empty() {
        return None;
    }
    let mut newest_first = old.to_vec();
    newest_first.sort_by(|a, b| util::by_creation(b, a));
    let all_active = active(with_new(&newest_first, new));
    match all_active.len() {
        0 => new.cloned().or_else(|| newest_first.first().cloned()),
        1 => all_active.into_iter().next(),
        _ => None,
    }
}
