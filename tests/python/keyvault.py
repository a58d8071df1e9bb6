"""Reads a Key Vault secret the way training code does (seed 002 of the AML docs): SecretClient with
a credential. argv: vault_url secret_name. The credential is a pre-minted token from AZURE_ACCESS_TOKEN
(what a ComputeIdentity Secret holds) or a ClientSecretCredential from AZURE_TENANT_ID,
AZURE_CLIENT_ID, AZURE_CLIENT_SECRET and AZURE_AUTHORITY_HOST; CA from REQUESTS_CA_BUNDLE. Prints a
SHA-256 of the value (never the value), or the error (exit 1).
"""
import hashlib
import os
import sys

from azure.core.credentials import AccessToken, AccessTokenInfo
from azure.identity import ClientSecretCredential
from azure.keyvault.secrets import SecretClient



class StaticToken:
    """A token minted elsewhere, as a credential."""

    def __init__(self, token, expires_on):
        self.token = AccessToken(token, int(expires_on))

    def get_token(self, *scopes, **kwargs):
        return self.token

    def get_token_info(self, *scopes, **kwargs):
        return AccessTokenInfo(self.token.token, self.token.expires_on)


vault_url, name = sys.argv[1], sys.argv[2]
if os.environ.get("AZURE_ACCESS_TOKEN"):
    credential = StaticToken(os.environ["AZURE_ACCESS_TOKEN"], os.environ["EXPIRES_ON"])
else:
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
