//! Every service is reachable the way operators and tools reach it: the standard health
//! check, and reflection where it is meant to be on.

use trickle_tests::{Backend, TestTrickle};

/// Every service answers the standard health check and lists its service through reflection
/// v1alpha (what grpcurl speaks) and v1 — the public API only when `[frontend] reflection`
/// turns it on; the coordinator's admin API only on its own listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_serves_health_and_reflection() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    use tonic_reflection::pb::{v1, v1alpha};

    // By default the public listener serves no reflection: a map of the API for anyone.
    let closed = TestTrickle::start(Backend::Sqlite).await;
    let channel = tonic::transport::Endpoint::from_shared(closed.cluster.frontend.url())
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let status = v1::server_reflection_client::ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::iter([v1::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
                String::new(),
            )),
        }]))
        .await
        .map(|_| ())
        .expect_err("no reflection on the public API by default");
    assert_eq!(status.code(), tonic::Code::Unimplemented, "{status:?}");
    // The operators' API is not on the address the frontend calls.
    let status =
        trickle_proto::migration::v1::migration_admin_client::MigrationAdminClient::connect(
            closed.cluster.coordinator.url(),
        )
        .await
        .expect("connect")
        .get_status(trickle_proto::migration::v1::GetStatusRequest {})
        .await
        .expect_err("admin API on the coordinator's service address");
    assert_eq!(status.code(), tonic::Code::Unimplemented, "{status:?}");
    drop(closed);

    let trickle = TestTrickle::start_with(Backend::Sqlite, |config| {
        config.frontend.reflection = true;
    })
    .await;
    let legacy = trickle.cluster.legacy.as_ref().expect("running");
    let services = [
        (
            trickle.cluster.frontend.url(),
            "trickle.auth.v1.AuthService",
        ),
        (
            trickle.cluster.store.url(),
            "trickle.userstore.v1.UserStore",
        ),
        (
            trickle.cluster.coordinator.url(),
            "trickle.migration.v1.MigrationCoordinator",
        ),
        (
            trickle.cluster.coordinator.admin_url(),
            "trickle.migration.v1.MigrationAdmin",
        ),
        (legacy.url(), "trickle.legacy.v1.LegacyConnector"),
    ];
    for (url, service) in services {
        let channel = tonic::transport::Endpoint::from_shared(url.clone())
            .expect("url")
            .connect()
            .await
            .expect("connect");
        for name in ["", service] {
            let answer = HealthClient::new(channel.clone())
                .check(HealthCheckRequest {
                    service: name.into(),
                })
                .await
                .expect("health")
                .into_inner();
            assert_eq!(
                answer.status,
                ServingStatus::Serving as i32,
                "{url} {name:?}"
            );
        }

        let request = v1alpha::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(
                v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
            ),
        };
        let mut stream =
            v1alpha::server_reflection_client::ServerReflectionClient::new(channel.clone())
                .server_reflection_info(tokio_stream::iter([request]))
                .await
                .expect("reflection v1alpha")
                .into_inner();
        let Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
            stream
                .message()
                .await
                .expect("answer")
                .expect("one message")
                .message_response
        else {
            panic!("v1alpha reflection did not list services");
        };
        assert!(
            list.service.iter().any(|s| s.name == service),
            "{service} in {:?}",
            list.service
        );

        let request = v1::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
                String::new(),
            )),
        };
        let mut stream = v1::server_reflection_client::ServerReflectionClient::new(channel)
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .expect("reflection v1")
            .into_inner();
        let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
            stream
                .message()
                .await
                .expect("answer")
                .expect("one message")
                .message_response
        else {
            panic!("v1 reflection did not list services");
        };
        assert!(list.service.iter().any(|s| s.name == service));
    }
}
