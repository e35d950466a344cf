//! The calls each scenario makes, and the accounts they use.

use super::*;

/// Cheap to clone: the scenarios' calls share the connections.
#[derive(Clone)]
pub(super) struct Clients {
    pub(super) channels: Arc<Vec<Channel>>,
}

impl Clients {
    /// A few HTTP/2 connections, so that many callers are not all one TCP stream.
    pub(super) async fn connect(
        addr: &str,
        tls: &trickle_service_kit::tls::TlsConfig,
        callers: usize,
    ) -> anyhow::Result<Self> {
        let connections = callers.div_ceil(64).clamp(1, 8);
        let mut channels = Vec::new();
        for _ in 0..connections {
            let what = "the Trickle frontend (is `trickle dev` running?)";
            channels.push(crate::connect::channel(addr, tls, what).await?);
        }
        Ok(Self {
            channels: Arc::new(channels),
        })
    }

    pub(super) fn auth(&self, worker: usize) -> AuthServiceClient<Channel> {
        AuthServiceClient::new(self.channels[worker % self.channels.len()].clone())
    }
}

#[derive(Debug, Default)]
pub(super) struct Accounts {
    pub(super) emails: Vec<String>,
    pub(super) user_ids: Vec<String>,
    pub(super) tokens: Vec<String>,
}

impl Accounts {
    pub(super) async fn create(
        clients: &Clients,
        run_id: &str,
        password: &str,
        count: usize,
    ) -> anyhow::Result<Self> {
        let mut accounts = Accounts::default();
        for i in 0..count {
            let email = format!("bench-{run_id}-u{i}@bench.trickle.invalid");
            let mut client = clients.auth(i);
            let mut attempts = 0;
            let user = loop {
                attempts += 1;
                match client
                    .sign_up(SignUpRequest {
                        email: email.clone(),
                        password: password.to_owned(),
                        profile: None,
                    })
                    .await
                {
                    Ok(r) => break r.into_inner().user.unwrap_or_default(),
                    Err(s) if s.code() == tonic::Code::ResourceExhausted && attempts < 50 => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Err(s) => anyhow::bail!("cannot sign up a bench user: {}", s.message()),
                }
            };
            let login = client
                .login(LoginRequest {
                    email: email.clone(),
                    password: password.to_owned(),
                    attempt_source: String::new(),
                })
                .await
                .map_err(|s| anyhow::anyhow!("a bench user cannot log in: {}", s.message()))?
                .into_inner();
            accounts.emails.push(email);
            accounts.user_ids.push(user.user_id);
            accounts.tokens.push(login.access_token);
        }
        Ok(accounts)
    }
}

pub(super) fn login_op(clients: &Clients, accounts: &Accounts, password: &str) -> Op {
    let clients = clients.clone();
    let emails = Arc::new(accounts.emails.clone());
    let password = password.to_owned();
    Arc::new(move |worker, _| {
        let mut client = clients.auth(worker);
        let request = LoginRequest {
            email: emails[worker % emails.len()].clone(),
            password: password.clone(),
            attempt_source: String::new(),
        };
        Box::pin(async move {
            client
                .login(request)
                .await
                .map(|_| ())
                .map_err(|s| Failure::of(&s))
        })
    })
}

pub(super) fn first_login_op(clients: &Clients, emails: Vec<String>, password: &str) -> Op {
    let clients = clients.clone();
    let emails = Arc::new(emails);
    let next = Arc::new(AtomicUsize::new(0));
    let password = password.to_owned();
    Arc::new(move |worker, _| {
        let mut client = clients.auth(worker);
        let index = next.fetch_add(1, Ordering::Relaxed);
        let email = emails.get(index).cloned();
        let password = password.clone();
        Box::pin(async move {
            let Some(email) = email else {
                return Err(Failure::named("OutOfLegacyUsers"));
            };
            let response = client
                .login(LoginRequest {
                    email,
                    password,
                    attempt_source: String::new(),
                })
                .await
                .map_err(|s| Failure::of(&s))?
                .into_inner();
            if response.migrated {
                Ok(())
            } else {
                Err(Failure::named("NotMigrated"))
            }
        })
    })
}

pub(super) fn validate_op(clients: &Clients, accounts: &Accounts) -> Op {
    let clients = clients.clone();
    let tokens = Arc::new(accounts.tokens.clone());
    Arc::new(move |worker, i| {
        let mut client = clients.auth(worker);
        let access_token = tokens[(worker + i as usize) % tokens.len()].clone();
        Box::pin(async move {
            client
                .validate_token(ValidateTokenRequest { access_token })
                .await
                .map(|_| ())
                .map_err(|s| Failure::of(&s))
        })
    })
}

pub(super) fn get_user_op(clients: &Clients, accounts: &Accounts) -> Op {
    let clients = clients.clone();
    let ids = Arc::new(accounts.user_ids.clone());
    Arc::new(move |worker, i| {
        let mut client = clients.auth(worker);
        let user_id = ids[(worker + i as usize) % ids.len()].clone();
        Box::pin(async move {
            client
                .get_user(GetUserRequest {
                    lookup: Some(get_user_request::Lookup::UserId(user_id)),
                })
                .await
                .map(|_| ())
                .map_err(|s| Failure::of(&s))
        })
    })
}

pub(super) fn sign_up_op(clients: &Clients, run_id: &str, password: &str) -> Op {
    let clients = clients.clone();
    let run_id = run_id.to_owned();
    let password = password.to_owned();
    Arc::new(move |worker, i| {
        let mut client = clients.auth(worker);
        let request = SignUpRequest {
            email: format!("bench-{run_id}-s{worker}-{i}@bench.trickle.invalid"),
            password: password.clone(),
            profile: None,
        };
        Box::pin(async move {
            client
                .sign_up(request)
                .await
                .map(|_| ())
                .map_err(|s| Failure::of(&s))
        })
    })
}
