//! `trickle login EMAIL`: log in through the public API and show what happened, so a
//! newcomer can watch a migration without a gRPC client.

use anyhow::Context as _;
use std::io::{BufRead as _, IsTerminal as _};
use trickle_proto::auth::v1::auth_service_client::AuthServiceClient;
use trickle_proto::auth::v1::{LoginRequest, Source, ValidateTokenRequest, VerifyMfaRequest};
use trickle_service_kit::rpc;

/// A secret from a prompt on a terminal, or the next line of standard input — never from
/// the command line, where `ps` and shell history would keep it.
fn read_secret(prompt: &str, what: &str) -> anyhow::Result<String> {
    if std::io::stdin().is_terminal() {
        Ok(rpassword::prompt_password(prompt)?)
    } else {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .with_context(|| format!("cannot read the {what} from standard input"))?;
        Ok(line.trim_end_matches(['\r', '\n']).to_owned())
    }
}

fn failed(what: &str, status: &tonic::Status) -> anyhow::Error {
    let reason = rpc::reason_of(status).unwrap_or_else(|| "-".into());
    let mut message = format!(
        "{what} failed: {} ({:?}, reason {reason})",
        status.message(),
        status.code()
    );
    for v in rpc::field_violations(status) {
        message.push_str(&format!("\n  {}: {}", v.field, v.description));
    }
    anyhow::anyhow!(message)
}

fn source_name(source: i32) -> &'static str {
    match Source::try_from(source) {
        Ok(Source::Signup) => "sign-up",
        Ok(Source::LoginMigration) => "migrated on login",
        Ok(Source::ResetMigration) => "migrated on password reset",
        Ok(Source::Backfill) => "backfill",
        _ => "unknown",
    }
}

pub async fn run(
    address: &str,
    tls: &trickle_service_kit::tls::TlsConfig,
    email: &str,
) -> anyhow::Result<()> {
    let password = read_secret(&format!("Password for {email}: "), "password")?;
    let channel = crate::connect::channel(
        address,
        tls,
        "the Trickle frontend (is `trickle dev` running?)",
    )
    .await?;
    let mut client = AuthServiceClient::new(channel);
    let mut response = client
        .login(LoginRequest {
            email: email.to_owned(),
            password,
            attempt_source: String::new(),
        })
        .await
        .map_err(|status| failed("login", &status))?
        .into_inner();
    // The password was right and the user has a second factor: their code finishes it.
    if response.mfa_required {
        let code = read_secret(
            "Code from the authenticator app (or a recovery code): ",
            "second-factor code",
        )?;
        response = client
            .verify_mfa(VerifyMfaRequest {
                mfa_challenge: std::mem::take(&mut response.mfa_challenge),
                code,
            })
            .await
            .map_err(|status| failed("the second factor", &status))?
            .into_inner();
    }
    let user = response.user.unwrap_or_default();
    let profile = user.profile.unwrap_or_default();
    println!("Logged in.");
    println!("  user_id         {}", user.user_id);
    println!(
        "  email           {} (as stored: {})",
        user.email, user.display_email
    );
    println!("  email verified  {}", user.email_verified);
    println!(
        "  legacy id       {}",
        if user.legacy_id.is_empty() {
            "-"
        } else {
            &user.legacy_id
        }
    );
    println!(
        "  name            {}",
        if profile.name.is_empty() {
            "-"
        } else {
            &profile.name
        }
    );
    println!("  source          {}", source_name(user.source));
    println!(
        "  migrated now    {}",
        if response.migrated {
            "yes: this login moved the user from the legacy store"
        } else {
            "no"
        }
    );
    let claims = client
        .validate_token(ValidateTokenRequest {
            access_token: response.access_token,
        })
        .await
        .context("the issued token did not validate")?
        .into_inner()
        .claims
        .unwrap_or_default();
    println!(
        "Access token (expires in {} s), claims:",
        response.expires_in
    );
    println!(
        "  sub {}  email {}  legacy_id {}",
        claims.sub,
        claims.email,
        if claims.legacy_id.is_empty() {
            "-"
        } else {
            &claims.legacy_id
        }
    );
    println!(
        "  iss {}  aud {}  iat {}  exp {}",
        claims.iss, claims.aud, claims.iat, claims.exp
    );
    println!("  amr {}", claims.amr.join(" "));
    Ok(())
}

/// `trickle totp-code`: the current code of a base32 secret, and how long it stays valid.
pub fn print_totp_code(secret: Option<&str>) -> anyhow::Result<()> {
    use trickle_password::totp::{Totp, TotpParams, TotpSecret};
    let secret = match secret {
        Some(secret) => secret.to_owned(),
        None => read_secret("TOTP secret (base32): ", "TOTP secret")?,
    };
    let factor = Totp::new(
        TotpSecret::from_base32(&secret).context("not a TOTP secret")?,
        TotpParams::default(),
    )?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .context("the clock is before 1970")?
        .as_secs();
    let period = u64::from(factor.params.period_seconds);
    println!("{}", factor.code_at(now));
    eprintln!("valid for {} more seconds", period - now % period);
    Ok(())
}
