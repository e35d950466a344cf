#!/usr/bin/env python3
"""Generate the export files the import tests load, with the tools the hashes come from.

Run it to refresh the committed files (so `cargo test` needs no Python):

    pip install bcrypt argon2-cffi
    python3 tests/vectors/generate_imports.py tests/vectors

- auth0-users.ndjson: users as Auth0's bulk import schema describes them, one per line (the
  layout of its user export). Hashes are made by Python's hashlib and hmac (md5, sha1,
  sha224, sha256, sha384, sha512 with salts before or after the password and the documented
  encodings, UTF-16LE and Latin-1 passwords), by OpenSSL's command line for md4, ripemd160
  and whirlpool (its legacy provider);
  PBKDF2 and scrypt with hashlib's own pbkdf2_hmac and scrypt), by the `bcrypt` package, and
  by argon2-cffi. Each line also carries `x_test_password` (ignored by the importer, which
  ignores fields it does not know, as Auth0's exports carry many) so the tests can log in.
- firebase-users.json: a `firebase auth:export` file under the project parameters Firebase
  publishes with its scrypt (github.com/firebase/scrypt): its own vector user verbatim, and
  users hashed here the way that repository's C code does (hashlib.scrypt over the password
  and salt + separator, N = 2^mem_cost, r = rounds, p = 1, 32 bytes; the signer key
  encrypted with them by AES-256-CTR from a zero IV, with `cryptography`).
- keycloak-realm.json: a realm export's `users`, with credentials laid out as Keycloak's
  PasswordCredentialModel and OTPCredentialModel write them (secretData / credentialData
  JSON inside strings): PBKDF2 (SHA-1, SHA-256, SHA-512; 64-byte keys as Keycloak derives)
  by hashlib.pbkdf2_hmac, argon2id raw hashes by argon2-cffi's low-level API, and TOTP
  secrets kept as text (the key is their UTF-8 bytes).
- firebase-algorithms/*.json: files in Firebase's import layout for each other `--hash-algo`
  of `firebase auth:import` (HMAC_*, MD5/SHA* with one round, PBKDF_SHA1, PBKDF2_SHA256,
  BCRYPT, STANDARD_SCRYPT), hashed by hashlib, hmac and bcrypt as the flags recorded in
  flags.json (with each user's password) describe.
- trickle-users.jsonl: Trickle's own line format, with bcrypt (the `bcrypt` package), Django
  PBKDF2 (hashlib, Django's layout) and LDAP {SSHA} (hashlib) hashes; passwords in
  trickle-users.passwords.json, keyed by legacy id (the format refuses unknown fields).

Passwords and salts are fixed, so the files only change when this script does (bcrypt and
argon2 draw their own salts, so those lines change on every run).
"""

import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys

import argon2
import argon2.low_level
import bcrypt
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

TOTP_SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def b64_nopad(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


def openssl_digest(algorithm: str, data: bytes, key: bytes = b"") -> bytes:
    """A digest (an HMAC with `key`) by OpenSSL's command line: MD4, RIPEMD-160 and Whirlpool
    live in its legacy provider, which Python's hashlib does not load."""
    command = ["openssl", "dgst", f"-{algorithm}", "-provider", "legacy", "-provider", "default"]
    if key:
        command += ["-mac", "HMAC", "-macopt", f"hexkey:{key.hex()}"]
    out = subprocess.run(command, input=data, capture_output=True, check=True).stdout.decode()
    return bytes.fromhex(out.strip().split()[-1])


def auth0_users():
    users = []

    def add(n, password, **fields):
        user = {
            "user_id": f"auth0|{n:04d}",
            "email": f"auth0-{n}@example.com",
            "email_verified": True,
            "given_name": "Imported",
            "family_name": f"User {n}",
            "name": f"Imported User {n}",
            "x_test_password": password,
        }
        user.update(fields)
        users.append(user)

    pw = "correct horse 1"
    add(1, pw, password_hash=bcrypt.hashpw(pw.encode(), bcrypt.gensalt(rounds=4)).decode(),
        app_metadata={"plan": "gold", "roles": ["editor"]},
        user_metadata={"theme": "dark"})
    pw = "correct horse 2"
    add(2, pw, custom_password_hash={
        "algorithm": "argon2",
        "hash": {"value": argon2.PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash(pw),
                 "encoding": "utf8"}})
    pw = "correct horse 3"
    add(3, pw, custom_password_hash={
        "algorithm": "bcrypt",
        "hash": {"value": bcrypt.hashpw(pw.encode(), bcrypt.gensalt(rounds=5)).decode()}})
    pw = "correct horse 4"
    salt = b"ldapsalt"
    add(4, pw, custom_password_hash={
        "algorithm": "ldap",
        "hash": {"value": "{SSHA}" + b64(hashlib.sha1(pw.encode() + salt).digest() + salt),
                 "encoding": "utf8"}})
    pw = "correct horse 5"
    add(5, pw, custom_password_hash={
        "algorithm": "md5",
        "hash": {"value": hashlib.md5(pw.encode()).hexdigest(), "encoding": "hex"}})
    pw = "correct horse 6"
    salt = "pepper-and-salt"
    add(6, pw, custom_password_hash={
        "algorithm": "sha1",
        "hash": {"value": b64(hashlib.sha1(salt.encode() + pw.encode()).digest()), "encoding": "base64"},
        "salt": {"value": salt, "encoding": "utf8", "position": "prefix"}})
    pw = "correct horse 7"
    salt = bytes.fromhex("00ff10ee20dd")
    add(7, pw, custom_password_hash={
        "algorithm": "sha256",
        "hash": {"value": hashlib.sha256(pw.encode() + salt).hexdigest(), "encoding": "hex"},
        "salt": {"value": salt.hex(), "encoding": "hex", "position": "suffix"}})
    pw = "correct horse 8 ü"
    salt = b"s8"
    add(8, pw, custom_password_hash={
        "algorithm": "sha512",
        "hash": {"value": b64(hashlib.sha512(salt + pw.encode("utf-16-le")).digest()), "encoding": "base64"},
        "salt": {"value": b64(salt), "encoding": "base64", "position": "prefix"},
        "password": {"encoding": "utf16le"}})
    pw = "correct horse 9"
    salt = b"pbkdf2-salt-9"
    derived = hashlib.pbkdf2_hmac("sha256", pw.encode(), salt, 1000, 32)
    add(9, pw, custom_password_hash={
        "algorithm": "pbkdf2",
        "hash": {"value": f"$pbkdf2-sha256$i=1000,l=32${b64_nopad(salt)}${b64_nopad(derived)}",
                 "encoding": "utf8"}})
    pw = "correct horse 10"
    salt = b"pbkdf2-salt-10"
    derived = hashlib.pbkdf2_hmac("sha512", pw.encode(), salt, 1000, 64)
    add(10, pw, custom_password_hash={
        "algorithm": "pbkdf2",
        "hash": {"value": f"$pbkdf2-sha512$i=1000,l=64${b64_nopad(salt)}${b64_nopad(derived)}",
                 "encoding": "utf8"}})
    pw = "correct horse 11"
    salt = b"scrypt-salt-11"
    derived = hashlib.scrypt(pw.encode(), salt=salt, n=1024, r=8, p=1, dklen=32)
    add(11, pw, custom_password_hash={
        "algorithm": "scrypt",
        "hash": {"value": b64(derived), "encoding": "base64"},
        "salt": {"value": b64(salt), "encoding": "base64"},
        "keylen": 32, "cost": 1024, "blockSize": 8, "parallelization": 1})
    pw = "correct horse 12"
    key = b"hmac-key-12"
    salt = "hs12"
    add(12, pw, custom_password_hash={
        "algorithm": "hmac",
        "hash": {"value": hmac.new(key, (salt + pw).encode(), hashlib.sha256).hexdigest(), "encoding": "hex",
                 "digest": "sha256", "key": {"value": b64(key), "encoding": "base64"}},
        "salt": {"value": salt, "encoding": "utf8", "position": "prefix"}})
    # A second factor and a block: the factor moves with the user, the block too.
    pw = "correct horse 13"
    add(13, pw, password_hash=bcrypt.hashpw(pw.encode(), bcrypt.gensalt(rounds=4)).decode(),
        mfa_factors=[{"totp": {"secret": TOTP_SECRET}}])
    pw = "correct horse 14"
    add(14, pw, password_hash=bcrypt.hashpw(pw.encode(), bcrypt.gensalt(rounds=4)).decode(), blocked=True)
    # Not importable: an algorithm Auth0 does not document, and a user without any password.
    add(15, "unused", custom_password_hash={
        "algorithm": "crc32", "hash": {"value": "cbf43926", "encoding": "hex"}})
    add(16, "unused")
    # The rest of Auth0's list: md4, HMACs over md4, sha224, sha384, ripemd160 and whirlpool
    # (OpenSSL for the digests hashlib lacks), and a Latin-1 password.
    pw = "correct horse 17"
    salt = "s17"
    add(17, pw, custom_password_hash={
        "algorithm": "md4",
        "hash": {"value": openssl_digest("md4", (pw + salt).encode()).hex(), "encoding": "hex"},
        "salt": {"value": salt, "encoding": "utf8", "position": "suffix"}})
    pw = "correct horse 18"
    key = b"k18"
    add(18, pw, custom_password_hash={
        "algorithm": "hmac",
        "hash": {"value": openssl_digest("md4", pw.encode(), key).hex(), "encoding": "hex",
                 "digest": "md4", "key": {"value": key.decode(), "encoding": "utf8"}}})
    pw = "correct horse 19"
    key = b"k19"
    salt = "s19"
    add(19, pw, custom_password_hash={
        "algorithm": "hmac",
        "hash": {"value": hmac.new(key, (salt + pw).encode(), hashlib.sha224).hexdigest(), "encoding": "hex",
                 "digest": "sha224", "key": {"value": key.hex(), "encoding": "hex"}},
        "salt": {"value": salt, "encoding": "utf8", "position": "prefix"}})
    pw = "correct horse 20"
    key = b"k20"
    add(20, pw, custom_password_hash={
        "algorithm": "hmac",
        "hash": {"value": b64(hmac.new(key, pw.encode(), hashlib.sha384).digest()), "encoding": "base64",
                 "digest": "sha384", "key": {"value": b64(key), "encoding": "base64"}}})
    pw = "correct horse 21"
    key = b"k21"
    salt = b"s21"
    add(21, pw, custom_password_hash={
        "algorithm": "hmac",
        "hash": {"value": b64(openssl_digest("ripemd160", salt + pw.encode(), key)), "encoding": "base64",
                 "digest": "ripemd160", "key": {"value": key.decode(), "encoding": "utf8"}},
        "salt": {"value": b64(salt), "encoding": "base64", "position": "prefix"}})
    pw = "correct horse 22"
    key = b"k22"
    add(22, pw, custom_password_hash={
        "algorithm": "hmac",
        "hash": {"value": openssl_digest("whirlpool", pw.encode(), key).hex(), "encoding": "hex",
                 "digest": "whirlpool", "key": {"value": key.decode(), "encoding": "utf8"}}})
    pw = "correct horse 23 é"
    add(23, pw, custom_password_hash={
        "algorithm": "md5",
        "hash": {"value": hashlib.md5(pw.encode("latin-1")).hexdigest(), "encoding": "hex"},
        "password": {"encoding": "latin1"}})
    return users


FIREBASE = {
    "base64_signer_key": "jxspr8Ki0RYycVU8zykbdLGjFQ3McFUH0uiiTvC8pVMXAn210wjLNmdZJzxUECKbm0QsEmYUSDzZvpjeJ9WmXA==",
    "base64_salt_separator": "Bw==",
    "rounds": 8,
    "mem_cost": 14,
}


def firebase_hash(password: str, salt: bytes) -> bytes:
    key = base64.b64decode(FIREBASE["base64_signer_key"])
    separator = base64.b64decode(FIREBASE["base64_salt_separator"])
    derived = hashlib.scrypt(password.encode(), salt=salt + separator, n=2 ** FIREBASE["mem_cost"],
                             r=FIREBASE["rounds"], p=1, dklen=32, maxmem=64 * 1024 * 1024)
    encryptor = Cipher(algorithms.AES(derived), modes.CTR(b"\0" * 16)).encryptor()
    return encryptor.update(key) + encryptor.finalize()


def firebase_users():
    users = [{
        # Firebase's own published vector.
        "localId": "published-vector", "email": "user1@example.com", "emailVerified": True,
        "passwordHash": "lSrfV15cpx95/sZS2W9c9Kp6i/LVgQNDNC/qzrCnh1SAyZvqmZqAjTdn3aoItz+VHjoZilo78198JAdRuid5lQ==",
        "salt": "42xEC+ixf3L2lw==", "x_test_password": "user1password",
        "displayName": "User One", "providerUserInfo": []}]
    assert base64.b64encode(firebase_hash("user1password", base64.b64decode("42xEC+ixf3L2lw=="))).decode() \
        == users[0]["passwordHash"], "the generator must reproduce Firebase's vector"
    for n, extra in [(2, {"customAttributes": json.dumps({"admin": True, "roles": ["ops"]})}),
                     (3, {"disabled": True})]:
        password = f"firebase password {n}"
        salt = f"salt-{n}-salt".encode()
        user = {"localId": f"fb-uid-{n}", "email": f"firebase-{n}@example.com", "emailVerified": n == 2,
                "passwordHash": base64.b64encode(firebase_hash(password, salt)).decode(),
                "salt": base64.b64encode(salt).decode(), "x_test_password": password,
                "createdAt": "1700000000000", "providerUserInfo": []}
        user.update(extra)
        users.append(user)
    # A user who signs in with a provider only: no password to import.
    users.append({"localId": "fb-uid-4", "email": "firebase-4@example.com", "providerUserInfo": [
        {"providerId": "google.com", "rawId": "1234"}]})
    return {"users": users}


def keycloak_realm():
    def password(algorithm, pw, salt, iterations, extra=None):
        if algorithm == "argon2":
            digest = argon2.low_level.hash_secret_raw(pw.encode(), salt, time_cost=iterations,
                                                      memory_cost=7168, parallelism=1, hash_len=32,
                                                      type=argon2.low_level.Type.ID)
            params = {"hashLength": ["32"], "memory": ["7168"], "type": ["id"], "version": ["1.3"],
                      "parallelism": ["1"]}
        else:
            name = {"pbkdf2": "sha1", "pbkdf2-sha256": "sha256", "pbkdf2-sha512": "sha512"}[algorithm]
            digest = hashlib.pbkdf2_hmac(name, pw.encode(), salt, iterations, 64)
            params = {}
        return {"type": "password", "createdDate": 1700000000000,
                "secretData": json.dumps({"value": b64(digest), "salt": b64(salt), "additionalParameters": {}}),
                "credentialData": json.dumps({"hashIterations": iterations, "algorithm": algorithm,
                                              "additionalParameters": params})}

    def otp(secret, sub_type="totp"):
        return {"type": "otp", "userLabel": "phone",
                "secretData": json.dumps({"value": secret}),
                "credentialData": json.dumps({"subType": sub_type, "digits": 6, "counter": 0, "period": 30,
                                              "algorithm": "HmacSHA1"})}

    def user(n, credentials, **extra):
        u = {"id": f"kc-{n:02d}-0000-4000-8000-000000000000", "username": f"kc{n}",
             "email": f"keycloak-{n}@example.com", "emailVerified": True, "enabled": True,
             "firstName": "Key", "lastName": f"Cloak {n}", "realmRoles": ["default-roles-demo"],
             "credentials": credentials}
        u.update(extra)
        return u

    users = [
        user(1, [password("pbkdf2-sha256", "keycloak password 1", b"kc-salt-01", 27500),
                 otp("abcdefghijABCDEFGHIJ")], realmRoles=["default-roles-demo", "admin"]),
        user(2, [password("pbkdf2-sha512", "keycloak password 2", b"kc-salt-02", 30000)]),
        user(3, [password("pbkdf2", "keycloak password 3", b"kc-salt-03", 20000)]),
        user(4, [password("argon2", "keycloak password 4", b"kc-salt-04-0123", 5)]),
        user(5, [password("pbkdf2-sha256", "keycloak password 5", b"kc-salt-05", 27500)], enabled=False),
        # A counter-based factor cannot move: the record is listed, not imported without it.
        user(6, [password("pbkdf2-sha256", "keycloak password 6", b"kc-salt-06", 27500),
                 otp("abcdefghijABCDEFGHIJ", sub_type="hotp")]),
        # No password (a social or federated login): listed.
        user(7, []),
    ]
    passwords = {u["email"]: f"keycloak password {n}" for n, u in enumerate(users, start=1)}
    return {"realm": "demo", "enabled": True, "users": users}, passwords


def firebase_algorithm_files():
    """Files in Firebase's import layout for each other `--hash-algo`, with the flags each
    was made under (what a `firebase auth:import` of it would be given). Salts get the
    separator appended, as Firebase does; digests and HMACs follow the input order named."""
    separator = b"\x07"
    cases = {
        "HMAC_SHA512": {"hash_key": b"hmac-key-512", "order": "SALT_FIRST", "sep": True},
        "HMAC_SHA256": {"hash_key": b"hmac-key-256", "order": "PASSWORD_FIRST", "sep": False},
        "HMAC_SHA1": {"hash_key": b"hmac-key-1", "order": "SALT_FIRST", "sep": False},
        "HMAC_MD5": {"hash_key": b"hmac-key-md5", "order": "PASSWORD_FIRST", "sep": True},
        "MD5": {"rounds": 1, "order": "SALT_FIRST", "sep": False},
        "SHA1": {"rounds": 1, "order": "PASSWORD_FIRST", "sep": True},
        "SHA256": {"rounds": 1, "order": "SALT_FIRST", "sep": True},
        "SHA512": {"rounds": 1, "order": "PASSWORD_FIRST", "sep": False},
        "PBKDF_SHA1": {"rounds": 1000, "sep": False},
        "PBKDF2_SHA256": {"rounds": 2000, "sep": True},
        "BCRYPT": {"sep": False},
        "STANDARD_SCRYPT": {"mem_cost": 1024, "block_size": 8, "parallelization": 1, "dk_len": 32,
                            "sep": False},
    }
    files, params = {}, {}
    for algo, case in cases.items():
        sep = separator if case["sep"] else b""
        users, passwords = [], {}
        for n in (1, 2):
            pw = f"{algo.lower()} password {n} ✓"
            salt = f"{algo}-salt-{n}".encode()
            salted = salt + sep
            first = (lambda: salted + pw.encode()) if case.get("order") == "SALT_FIRST" \
                else (lambda: pw.encode() + salted)
            if algo.startswith("HMAC_"):
                name = {"HMAC_SHA512": "sha512", "HMAC_SHA256": "sha256", "HMAC_SHA1": "sha1",
                        "HMAC_MD5": "md5"}[algo]
                digest = hmac.new(case["hash_key"], first(), name).digest()
            elif algo in ("MD5", "SHA1", "SHA256", "SHA512"):
                digest = hashlib.new(algo.lower(), first()).digest()
            elif algo == "PBKDF_SHA1":
                digest = hashlib.pbkdf2_hmac("sha1", pw.encode(), salted, case["rounds"], 20)
            elif algo == "PBKDF2_SHA256":
                digest = hashlib.pbkdf2_hmac("sha256", pw.encode(), salted, case["rounds"], 32)
            elif algo == "BCRYPT":
                digest = bcrypt.hashpw(pw.encode(), bcrypt.gensalt(rounds=4))
                salt = b""
            else:
                digest = hashlib.scrypt(pw.encode(), salt=salted, n=case["mem_cost"], r=case["block_size"],
                                        p=case["parallelization"], dklen=case["dk_len"])
            email = f"{algo.lower()}-{n}@example.com"
            users.append({"localId": f"{algo.lower()}-uid-{n}", "email": email, "emailVerified": True,
                          "passwordHash": b64(digest), "salt": b64(salt)})
            passwords[email] = pw
        files[algo] = {"users": users}
        flags = {"hash_algo": algo}
        if "hash_key" in case:
            flags["hash_key"] = b64(case["hash_key"])
        if case["sep"]:
            flags["salt_separator"] = b64(separator)
        for key in ("rounds", "mem_cost", "block_size", "parallelization", "dk_len"):
            if key in case:
                flags[key] = case[key]
        if "order" in case:
            flags["hash_input_order"] = case["order"]
        params[algo] = {"flags": flags, "passwords": passwords}
    return files, params


def trickle_users():
    users, passwords = [], {}
    pw = "line password 1"
    users.append({"legacy_id": 1, "email": "line-1@example.com", "email_verified": True,
                  "password_hash": bcrypt.hashpw(pw.encode(), bcrypt.gensalt(rounds=4)).decode(),
                  "name": "Line One", "roles": ["admin"], "user_metadata": {"lang": "fr"}})
    passwords["1"] = pw
    pw = "line password 2"
    salt = "djangosalt2"
    digest = b64(hashlib.pbkdf2_hmac("sha256", pw.encode(), salt.encode(), 1000))
    users.append({"legacy_id": "2", "email": "line-2@example.com",
                  "password_hash": f"pbkdf2_sha256$1000${salt}${digest}"})
    passwords["2"] = pw
    pw = "line password 3"
    salt = b"ssha3"
    users.append({"legacy_id": "3", "email": "line-3@example.com",
                  "password_hash": "{SSHA}" + b64(hashlib.sha1(pw.encode() + salt).digest() + salt),
                  "totp": {"secret": TOTP_SECRET, "digits": 6, "period": 30}})
    passwords["3"] = pw
    pw = "line password 4"
    users.append({"legacy_id": "4", "email": "line-4@example.com", "blocked": True,
                  "password_hash": bcrypt.hashpw(pw.encode(), bcrypt.gensalt(rounds=4)).decode()})
    passwords["4"] = pw
    return users, passwords


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(__file__)
    with open(os.path.join(out, "auth0-users.ndjson"), "w") as f:
        for user in auth0_users():
            f.write(json.dumps(user) + "\n")
    with open(os.path.join(out, "firebase-users.json"), "w") as f:
        json.dump(firebase_users(), f, indent=1)
        f.write("\n")
    realm, keycloak_passwords = keycloak_realm()
    with open(os.path.join(out, "keycloak-realm.json"), "w") as f:
        json.dump(realm, f, indent=1)
        f.write("\n")
    with open(os.path.join(out, "keycloak-realm.passwords.json"), "w") as f:
        json.dump(keycloak_passwords, f, indent=2)
        f.write("\n")
    files, params = firebase_algorithm_files()
    os.makedirs(os.path.join(out, "firebase-algorithms"), exist_ok=True)
    for algo, document in files.items():
        with open(os.path.join(out, "firebase-algorithms", f"{algo}.json"), "w") as f:
            json.dump(document, f, indent=1)
            f.write("\n")
    with open(os.path.join(out, "firebase-algorithms", "flags.json"), "w") as f:
        json.dump(params, f, indent=1, ensure_ascii=False)
        f.write("\n")
    users, passwords = trickle_users()
    with open(os.path.join(out, "trickle-users.jsonl"), "w") as f:
        # A line the importer cannot read, between good ones.
        for i, user in enumerate(users):
            f.write(json.dumps(user) + "\n")
            if i == 1:
                f.write('{"legacy_id": "broken", "email": \n')
    with open(os.path.join(out, "trickle-users.passwords.json"), "w") as f:
        json.dump(passwords, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
