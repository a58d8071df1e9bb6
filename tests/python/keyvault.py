"""Reads a Key Vault secret the way training code does (seed 002 of the AML docs): SecretClient with
a credential. argv: vault_url secret_name. Credential from AZURE_TENANT_ID, AZURE_CLIENT_ID,
AZURE_CLIENT_SECRET, AZURE_AUTHORITY_HOST; CA from REQUESTS_CA_BUNDLE. Prints the value's length and
a SHA-256 of it (never the value), or the error (exit 1).
"""
import hashlib
import os
import sys

from azure.identity import ClientSecretCredential
from azure.keyvault.secrets import SecretClient

vault_url, name = sys.argv[1], sys.argv[2]
credential = ClientSecretCredential(
    os.environ["AZURE_TENANT_ID"],
    os.environ["AZURE_CLIENT_ID"],
    os.environ["AZURE_CLIENT_SECRET"],
    authority=os.environ["AZURE_AUTHORITY_HOST"],
    disable_instance_discovery=True,
)
# The emulator is reached as localhost, so the challenge's vault.azure.net cannot match the host.
client = SecretClient(vault_url=vault_url, credential=credential, verify_challenge_resource=False)
try:
    value = client.get_secret(name).value
    print(hashlib.sha256(value.encode()).hexdigest())
except Exception as error:
    print(f"{type(error).__name__}: {error}")
    sys.exit(1)
