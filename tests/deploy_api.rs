//! The Deploy service against a real single-node daemon: apply (and its dry run), status, get
//! with masked environment values, rollback and delete, with the closed error codes for what
//! must be refused. The image never exists and is never pulled, so no container runs; the
//! runtime's own tests cover containers.

mod support;

use std::time::{Duration, Instant};

use jaco::error::{Code, Error};
use jaco::proto::v1 as pb;
use jaco::proto::v1::deploy_client::DeployClient;
use support::daemons::{DEADLINE, Daemons};
use tonic::transport::Channel;

const JACO: &str = "deployment: api-test\nacme: off\n";

fn compose(value: &str) -> String {
    format!(
        "services:\n  web:\n    image: jaco-test/absent:never\n    pull_policy: never\n    \
         environment:\n      GREETING: {value}\n      DB_PASSWORD: hunter2\n"
    )
}

fn apply_request(compose: &str, dry_run: bool) -> pb::ApplyRequest {
    pb::ApplyRequest {
        jaco_yaml: JACO.into(),
        compose_yaml: compose.into(),
        dry_run,
        ..Default::default()
    }
}

async fn status(client: &mut DeployClient<Channel>) -> pb::DeployStatusResponse {
    client
        .status(pb::DeployStatusRequest::default())
        .await
        .expect("status")
        .into_inner()
}

fn code_of(status: &tonic::Status) -> Code {
    Error::from_status(status).code
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_status_get_rollback_and_delete() {
    let cluster = Daemons::start(1, "");
    cluster.form().await;
    let mut client = DeployClient::new(cluster.local(0).await);

    // A dry run computes the diff and commits nothing.
    let dry = client
        .apply(apply_request(&compose("hello"), true))
        .await
        .expect("dry run")
        .into_inner();
    assert!(dry.dry_run && dry.state_revision == 0);
    assert_eq!(dry.revision, 1);
    assert!(dry.diff.as_ref().is_some_and(|d| d.created));
    assert!(status(&mut client).await.deployments.is_empty());

    // Apply commits revision 1 and the scheduler places the replica on the only node.
    let applied = client
        .apply(apply_request(&compose("hello"), false))
        .await
        .expect("apply")
        .into_inner();
    assert_eq!(
        (applied.deployment.as_str(), applied.revision),
        ("api-test", 1)
    );
    assert!(applied.state_revision > 0);
    let start = Instant::now();
    while status(&mut client).await.replicas.is_empty() {
        assert!(start.elapsed() < DEADLINE, "the replica was never placed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let s = status(&mut client).await;
    assert_eq!(s.deployments[0].name, "api-test");
    assert_eq!(s.deployments[0].status(), pb::DeploymentStatus::Active);
    let desired = s.replicas[0].desired.as_ref().unwrap();
    assert_eq!(
        (desired.id.as_str(), desired.node.as_str()),
        ("api-test-web-1", "n0")
    );
    assert_eq!(s.replicas.len(), 1);

    // Rolling back before a second revision exists is refused with the closed code.
    let refused = client
        .rollback(pb::RollbackRequest {
            deployment: "api-test".into(),
            ..Default::default()
        })
        .await
        .expect_err("nothing to roll back to");
    assert_eq!(code_of(&refused), Code::NoPreviousRevision);

    // A second revision, then a rollback to the first as revision 3.
    client
        .apply(apply_request(&compose("bonjour"), false))
        .await
        .expect("second apply");
    let rolled = client
        .rollback(pb::RollbackRequest {
            deployment: "api-test".into(),
            ..Default::default()
        })
        .await
        .expect("rollback")
        .into_inner();
    assert_eq!((rolled.revision, rolled.rolled_back_to), (3, 1));

    // get deployment masks environment values; the document still names the keys.
    let detail = client
        .get(pb::GetRequest {
            query: Some(pb::get_request::Query::Deployment(pb::DeploymentQuery {
                name: "api-test".into(),
                ..Default::default()
            })),
            consistent: true,
        })
        .await
        .expect("get")
        .into_inner();
    let Some(pb::get_response::Result::Deployment(detail)) = detail.result else {
        panic!("wrong answer kind");
    };
    assert!(detail.redacted);
    let text = format!("{:?}", detail.deployment);
    assert!(text.contains("DB_PASSWORD"), "{text}");
    assert!(
        !text.contains("hunter2"),
        "an environment value leaked: {text}"
    );
    assert_eq!(detail.revisions.len(), 3);

    // Bad input is refused with the manifest's own code and nothing is committed.
    let before = status(&mut client).await.deployments[0].revision;
    let bad = client
        .apply(apply_request(
            "services:\n  web:\n    image: x\n    mac_address: 1\n",
            false,
        ))
        .await
        .expect_err("unsupported key");
    assert_eq!(code_of(&bad), Code::ValidationFailed);
    assert_eq!(status(&mut client).await.deployments[0].revision, before);

    // Delete removes the deployment and its replicas; a second delete is not found.
    client
        .delete(pb::DeleteRequest {
            deployment: "api-test".into(),
            keep_volumes: false,
        })
        .await
        .expect("delete");
    let after = status(&mut client).await;
    assert!(
        after.deployments.is_empty() && after.replicas.is_empty(),
        "{after:?}"
    );
    let again = client
        .delete(pb::DeleteRequest {
            deployment: "api-test".into(),
            keep_volumes: false,
        })
        .await
        .expect_err("already gone");
    assert_eq!(code_of(&again), Code::DeploymentNotFound);
}
