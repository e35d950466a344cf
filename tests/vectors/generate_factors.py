#!/usr/bin/env python3
"""Generate second-factor (TOTP) test vectors with the libraries legacy apps use.

Run it to refresh tests/vectors/totp-factors.json (committed, so `cargo test` needs no
Python):

    pip install django-otp pyotp
    python3 tests/vectors/generate_factors.py > tests/vectors/totp-factors.json

- django: django-otp's own TOTPDevice model creates each device (its default key: 20 random
  bytes as 40 hex characters, step 30, 6 or 8 digits, t0 0) in a throwaway SQLite database;
  the vector is the row as django-otp wrote it, and a code django-otp's own TOTP object
  computes for a fixed time, with the device's verify_token() confirming it.
- aspnet_identity: the authenticator key as ASP.NET Core Identity stores it in
  AspNetUserTokens (base32 of 20 random bytes, upper case, no padding), made here with pyotp's
  random_base32(32) (the same alphabet and length), and a code from pyotp.TOTP.
- laravel: Fortify's `two_factor_secret`, as Laravel's Encrypter::encrypt() writes it (the
  secret PHP-serialized, AES-256-CBC with a random IV, HMAC-SHA256 over iv . value, all in
  base64 JSON), with Python's `cryptography` following Illuminate/Encryption/Encrypter.php;
  the secret is what Fortify's Google2FA makes (base32; 32 characters here, pyotp's
  alphabet), and a code from pyotp.TOTP.
- wordpress: the Two Factor plugin's `_two_factor_totp_key` user meta (base32 of 20 random
  bytes, its default key size of 160 bits) made with pyotp.random_base32(32), and a code
  from pyotp.TOTP.
"""

import base64
import hashlib
import hmac
import json
import os

import django
from django.conf import settings

settings.configure(
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
    INSTALLED_APPS=[
        "django.contrib.auth",
        "django.contrib.contenttypes",
        "django_otp",
        "django_otp.plugins.otp_totp",
    ],
    USE_TZ=True,
)
django.setup()

from django.contrib.auth.models import User  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django_otp.oath import TOTP  # noqa: E402
from django_otp.plugins.otp_totp.models import TOTPDevice  # noqa: E402
import pyotp  # noqa: E402

call_command("migrate", verbosity=0)

AT = 1_800_000_000  # a fixed moment: every code below is the code of this time
vectors = {"at": AT, "django": [], "aspnet_identity": [], "wordpress": []}

for i, digits in enumerate([6, 6, 8]):
    user = User.objects.create_user(f"otp{i}", f"otp{i}@example.com", "unused")
    device = TOTPDevice.objects.create(user=user, name="default", confirmed=True, digits=digits)
    totp = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift)
    totp.time = AT
    code = f"{totp.token():0{digits}d}"
    # The device itself accepts the code at that time (its own verify path).
    assert totp.verify(int(code), tolerance=0), "django-otp refuses its own code"
    vectors["django"].append({
        "key": device.key,
        "step": device.step,
        "digits": device.digits,
        "t0": device.t0,
        "code_at": code,
        "source": "django-otp TOTPDevice (default key), django_otp.oath.TOTP",
    })

for _ in range(2):
    secret = pyotp.random_base32(32)
    vectors["aspnet_identity"].append({
        "authenticator_key": secret,
        "code_at": pyotp.TOTP(secret).at(AT),
        "source": "pyotp.random_base32(32), pyotp.TOTP",
    })
    wp_key = pyotp.random_base32(32)
    vectors["wordpress"].append({
        "totp_key": wp_key,
        "code_at": pyotp.TOTP(wp_key).at(AT),
        "source": "pyotp.random_base32(32), pyotp.TOTP",
    })

from cryptography.hazmat.primitives import padding  # noqa: E402
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes  # noqa: E402


def laravel_encrypt(key: bytes, value: str) -> str:
    """Illuminate\\Encryption\\Encrypter::encrypt($value, serialize: true), AES-256-CBC."""
    plain = f's:{len(value.encode())}:"{value}";'.encode()
    iv = os.urandom(16)
    padder = padding.PKCS7(128).padder()
    padded = padder.update(plain) + padder.finalize()
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    value_b64 = base64.b64encode(encryptor.update(padded) + encryptor.finalize()).decode()
    iv_b64 = base64.b64encode(iv).decode()
    mac = hmac.new(key, (iv_b64 + value_b64).encode(), hashlib.sha256).hexdigest()
    payload = {"iv": iv_b64, "value": value_b64, "mac": mac, "tag": ""}
    return base64.b64encode(json.dumps(payload, separators=(",", ":")).encode()).decode()


app_key = os.urandom(32)
vectors["laravel"] = {"app_key": "base64:" + base64.b64encode(app_key).decode(), "users": []}
for _ in range(2):
    secret = pyotp.random_base32(32)
    vectors["laravel"]["users"].append({
        "secret": secret,
        "two_factor_secret": laravel_encrypt(app_key, secret),
        "code_at": pyotp.TOTP(secret).at(AT),
        "source": "Laravel Encrypter format via cryptography, pyotp.TOTP",
    })

print(json.dumps(vectors, indent=2))
