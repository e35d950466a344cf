//! What a caller sends: arbitrary bytes decoded as the public and internal request
//! messages, then through the conversions to domain values (emails, profiles with
//! free-form metadata). Nothing may panic, and decoding must stay bounded.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message as _;
use trickle_proto::auth::v1 as auth;
use trickle_proto::userstore::v1 as store;
use trickle_service_kit::email::Email;
use trickle_service_kit::rpc::Violations;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = auth::LoginRequest::decode(data) {
        let _ = Email::parse(&request.email);
    }
    if let Ok(request) = auth::SignUpRequest::decode(data) {
        let _ = Email::parse(&request.email);
        let mut violations = Violations::default();
        let _ = trickle_user_store::conversions::profile_from_proto(request.profile, &mut violations);
        let _ = violations.verdict();
    }
    if let Ok(request) = auth::GetUserRequest::decode(data) {
        if let Some(auth::get_user_request::Lookup::Email(email)) = request.lookup {
            let _ = Email::parse(&email);
        }
    }
    if let Ok(request) = store::ImportUserRequest::decode(data) {
        let _ = Email::parse(&request.email);
        let mut violations = Violations::default();
        let _ = trickle_user_store::conversions::profile_from_proto(request.profile, &mut violations);
    }
});
