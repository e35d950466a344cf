#!/usr/bin/env python3
"""Generate password hash test vectors with the reference implementations legacy apps used.

Run it to refresh tests/vectors/password-hashes.json (committed, so `cargo test` needs no
Python):

    pip install bcrypt argon2-cffi django libpass    # libpass is the maintained passlib
    apt-get install php-cli openssl                  # PHP's password_hash, openssl passwd
    python3 tests/vectors/generate.py > tests/vectors/password-hashes.json

Where no library implements a format (ASP.NET Identity and Membership, Drupal 7, salted
digest templates), the hash is computed here with Python's hashlib/hmac following the
application's published algorithm; everything else comes from the library or tool named in
each vector's "source".
"""

import base64
import hashlib
import hmac
import json
import os
import subprocess

import argon2
import bcrypt
from django.conf import settings

settings.configure(PASSWORD_HASHERS=[
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2SHA1PasswordHasher",
    "django.contrib.auth.hashers.BCryptSHA256PasswordHasher",
    "django.contrib.auth.hashers.Argon2PasswordHasher",
])
from django.contrib.auth import hashers as dj  # noqa: E402
from passlib import hash as ph  # noqa: E402

PASSWORDS = ["password", "correct horse battery staple", "pässwörd", "パスワード123", "  spaced out  ", "x" * 80]
vectors = []


def add(fmt, source, hash_, password, salt=None, template=None):
    entry = {"format": fmt, "source": source, "hash": hash_, "password": password, "valid": True}
    if salt is not None:
        entry["salt"] = salt
    if template is not None:
        entry["template"] = template
    vectors.append(entry)
    wrong = dict(entry, password=password + "!", valid=False)
    vectors.append(wrong)


def php(code):
    return subprocess.run(["php", "-r", code], check=True, capture_output=True, text=True).stdout.strip()


def openssl_passwd(flag, password, salt):
    return subprocess.run(["openssl", "passwd", flag, "-salt", salt, password], check=True, capture_output=True, text=True).stdout.strip()


class FastPBKDF2(dj.PBKDF2PasswordHasher):
    iterations = 10000


class FastPBKDF2SHA1(dj.PBKDF2SHA1PasswordHasher):
    iterations = 10000


class FastArgon2(dj.Argon2PasswordHasher):
    time_cost = 1
    memory_cost = 1024
    parallelism = 1


class FastBCryptSHA256(dj.BCryptSHA256PasswordHasher):
    rounds = 4


def drupal7(password, salt, count_log2=8):
    # Drupal 7 includes/password.inc: _password_crypt('sha512', ...), truncated to 55 chars.
    itoa = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    h = hashlib.sha512(salt.encode() + password.encode()).digest()
    for _ in range(1 << count_log2):
        h = hashlib.sha512(h + password.encode()).digest()
    out, i, n = "", 0, len(h)
    while True:
        v = h[i]; i += 1
        out += itoa[v & 0x3F]
        if i < n: v |= h[i] << 8
        out += itoa[(v >> 6) & 0x3F]
        if i >= n: break
        i += 1
        if i < n: v |= h[i] << 16
        out += itoa[(v >> 12) & 0x3F]
        if i >= n: break
        i += 1
        out += itoa[(v >> 18) & 0x3F]
        if i >= n: break
    return ("$S$" + itoa[count_log2] + salt + out)[:55]


def aspnet_identity_v2(password):
    salt = os.urandom(16)
    sub = hashlib.pbkdf2_hmac("sha1", password.encode(), salt, 1000, 32)
    return base64.b64encode(b"\x00" + salt + sub).decode()


def aspnet_identity_v3(password, prf=1, iterations=10000):
    salt = os.urandom(16)
    name = {0: "sha1", 1: "sha256", 2: "sha512"}[prf]
    sub = hashlib.pbkdf2_hmac(name, password.encode(), salt, iterations, 32)
    header = b"\x01" + prf.to_bytes(4, "big") + iterations.to_bytes(4, "big") + len(salt).to_bytes(4, "big")
    return base64.b64encode(header + salt + sub).decode()


for i, pw in enumerate(PASSWORDS[:5]):
    b = pw.encode()
    prefix = b"2b" if i % 2 == 0 else b"2a"
    add("bcrypt", "python bcrypt.hashpw", bcrypt.hashpw(b, bcrypt.gensalt(4, prefix=prefix)).decode(), pw)
    add("bcrypt", "php password_hash", php(f"echo password_hash(base64_decode('{base64.b64encode(b).decode()}'), PASSWORD_BCRYPT, ['cost' => 4]);"), pw)
    kind = [argon2.Type.ID, argon2.Type.I, argon2.Type.D][i % 3]
    add("argon2", "argon2-cffi", argon2.PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1, type=kind).hash(pw), pw)
    add("scrypt", "passlib scrypt", ph.scrypt.using(rounds=8).hash(pw), pw)
    add("pbkdf2", "passlib pbkdf2_sha256", ph.pbkdf2_sha256.using(rounds=1000).hash(pw), pw)
    add("pbkdf2", "passlib pbkdf2_sha512", ph.pbkdf2_sha512.using(rounds=1000).hash(pw), pw)
    add("pbkdf2", "passlib pbkdf2_sha1", ph.pbkdf2_sha1.using(rounds=1000).hash(pw), pw)
    add("django_pbkdf2_sha256", "django make_password", dj.make_password(pw, hasher=FastPBKDF2()), pw)
    add("django_pbkdf2_sha1", "django make_password", dj.make_password(pw, hasher=FastPBKDF2SHA1()), pw)
    add("django_bcrypt_sha256", "django make_password", dj.make_password(pw, hasher=FastBCryptSHA256()), pw)
    add("django_argon2", "django make_password", dj.make_password(pw, hasher=FastArgon2()), pw)
    add("aspnet_identity", "ASP.NET Identity v2 layout, hashlib PBKDF2", aspnet_identity_v2(pw), pw)
    add("aspnet_identity", "ASP.NET Identity v3 layout, hashlib PBKDF2", aspnet_identity_v3(pw, prf=i % 3), pw)
    add("phpass", "passlib phpass ($P$)", ph.phpass.using(rounds=8).hash(pw), pw)
    add("phpass", "passlib phpass ($H$)", ph.phpass.using(rounds=8, ident="H").hash(pw), pw)
    add("drupal7", "Drupal 7 password.inc algorithm, hashlib", drupal7(pw, base64.b64encode(os.urandom(6)).decode().replace("+", ".")), pw)
    wp = php(f"echo '$wp' . password_hash(base64_encode(hash_hmac('sha384', base64_decode('{base64.b64encode(b).decode()}'), 'wp-sha384', true)), PASSWORD_BCRYPT, ['cost' => 4]);")
    add("wordpress_bcrypt", "php (WordPress 6.8 wp_hash_password)", wp, pw)
    salt = base64.b64encode(os.urandom(6)).decode()[:8].replace("+", ".")
    add("crypt", "openssl passwd -6", openssl_passwd("-6", pw, salt), pw)
    add("crypt", "openssl passwd -5", openssl_passwd("-5", pw, salt), pw)
    add("crypt", "openssl passwd -1", openssl_passwd("-1", pw, salt), pw)
    add("ldap", "passlib ldap_salted_sha1", ph.ldap_salted_sha1.hash(pw), pw)
    add("ldap", "passlib ldap_sha1", ph.ldap_sha1.hash(pw), pw)
    add("ldap", "passlib ldap_salted_sha256", ph.ldap_salted_sha256.hash(pw), pw)
    add("ldap", "passlib ldap_salted_sha512", ph.ldap_salted_sha512.hash(pw), pw)
    add("ldap", "passlib ldap_md5", ph.ldap_md5.hash(pw), pw)
    add("ldap", "passlib ldap_salted_md5", ph.ldap_salted_md5.hash(pw), pw)
    msalt = base64.b64encode(os.urandom(16)).decode()
    membership = base64.b64encode(hashlib.sha1(base64.b64decode(msalt) + pw.encode("utf-16-le")).digest()).decode()
    add("aspnet_membership_sha1", "ASP.NET Membership SHA1 layout, hashlib", membership, pw, salt=msalt)
    for algorithm, position, encoding, key in [("md5", "before", "hex", ""), ("sha1", "after", "hex", ""),
                                               ("sha256", "before", "base64", ""), ("sha512", "after", "hex", "app-pepper")]:
        dsalt = base64.b64encode(os.urandom(6)).decode()
        message = (dsalt + pw if position == "before" else pw + dsalt).encode()
        raw = hmac.new(key.encode(), message, algorithm).digest() if key else hashlib.new(algorithm, message).digest()
        stored = raw.hex() if encoding == "hex" else base64.b64encode(raw).decode()
        template = {"algorithm": algorithm, "salt_position": position, "encoding": encoding, "hmac_key": key}
        add("salted_digest", "hashlib/hmac template", stored, pw, salt=dsalt, template=template)

# bcrypt reads only the first 72 bytes of the password, as PHP and the C library did: a
# longer password that shares them verifies too.
long_password = "ü" * 40  # 80 bytes of UTF-8
long_hash = php(f"echo password_hash(base64_decode('{base64.b64encode(long_password.encode()).decode()}'), PASSWORD_BCRYPT, ['cost' => 4]);")
for password, valid in [(long_password, True), ("ü" * 36 + "different tail", True), ("ü" * 35 + "u" + "ü" * 4, False)]:
    vectors.append({"format": "bcrypt", "source": "php password_hash (80-byte password; first 72 bytes decide)",
                    "hash": long_hash, "password": password, "valid": valid})

# Hashes that must not parse: truncated, bad cost, bad encoding.
for fmt, corrupted in [
    ("bcrypt", "$2b$04$tooshort"), ("bcrypt", "$2b$99$" + "a" * 53), ("argon2", "$argon2id$v=19$m=1024,t=1,p=1$!!$!!"),
    ("scrypt", "$scrypt$ln=99,r=8,p=1$c2FsdA$aGFzaA"), ("pbkdf2", "$pbkdf2-sha256$0$c2FsdA$aGFzaA"),
    ("django_pbkdf2_sha256", "pbkdf2_sha256$x$salt$hash"), ("phpass", "$P$9short"), ("drupal7", "$S$Cshort"),
    ("crypt", "$6$rounds=999999999$salt$hash"), ("ldap", "{SSHA}%%%"), ("aspnet_identity", "AQAAAA=="),
    ("wordpress_bcrypt", "$wp$2y$04$short"), ("django_bcrypt_sha256", "bcrypt_sha256$$2b$04$short"),
]:
    vectors.append({"format": fmt, "source": "corrupted by hand", "hash": corrupted, "password": "password", "valid": False, "corrupted": True})

print(json.dumps({"generated_by": "tests/vectors/generate.py", "vectors": vectors}, indent=1, ensure_ascii=False))
