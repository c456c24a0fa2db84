//! The ReplicationController loop (upstream `pkg/controller/replication`): the ReplicaSet
//! core over core/v1 ReplicationControllers, whose selector is a plain label map.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    PodTemplateSpec, ReplicationController, ReplicationControllerCondition,
    ReplicationControllerStatus,
};

use crate::Context;
use crate::replicaset::{ReplicaCondition, ReplicaKind, ReplicaStatus, nonzero, run_replicas};

/// Runs the ReplicationController loop.
pub async fn run(ctx: Context) -> anyhow::Result<()> {
    run_replicas::<ReplicationController>(ctx).await
}

impl ReplicaKind for ReplicationController {
    const COMPONENT: &'static str = "replication-controller";

    fn selects(&self, labels: &BTreeMap<String, String>) -> bool {
        // An absent selector was defaulted to the template's labels by the API server; an
        // empty one selects every pod, as upstream's `labels.Set{}.AsSelector()`.
        self.spec
            .as_ref()
            .and_then(|s| s.selector.as_ref())
            .is_some_and(|selector| selector.iter().all(|(k, v)| labels.get(k) == Some(v)))
    }

    fn spec_replicas(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }

    fn min_ready_seconds(&self) -> i32 {
        self.spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0)
    }

    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref()?.template.as_ref()
    }

    fn replica_status(&self) -> ReplicaStatus {
        let s = self.status.clone().unwrap_or_default();
        ReplicaStatus {
            replicas: s.replicas,
            fully_labeled_replicas: s.fully_labeled_replicas.unwrap_or(0),
            ready_replicas: s.ready_replicas.unwrap_or(0),
            available_replicas: s.available_replicas.unwrap_or(0),
            observed_generation: s.observed_generation.unwrap_or(0),
            conditions: s
                .conditions
                .unwrap_or_default()
                .into_iter()
                .map(|c| ReplicaCondition {
                    type_: c.type_,
                    status: c.status,
                    reason: c.reason,
                    message: c.message,
                    last_transition_time: c.last_transition_time,
                })
                .collect(),
        }
    }

    fn set_replica_status(&mut self, status: ReplicaStatus) {
        let conditions: Vec<ReplicationControllerCondition> = status
            .conditions
            .into_iter()
            .map(|c| ReplicationControllerCondition {
                type_: c.type_,
                status: c.status,
                reason: c.reason,
                message: c.message,
                last_transition_time: c.last_transition_time,
            })
            .collect();
        self.status = Some(ReplicationControllerStatus {
            replicas: status.replicas,
            fully_labeled_replicas: nonzero(status.fully_labeled_replicas),
            ready_replicas: nonzero(status.ready_replicas),
            available_replicas: nonzero(status.available_replicas),
            observed_generation: nonzero(status.observed_generation),
            conditions: (!conditions.is_empty()).then_some(conditions),
        });
    }
}
