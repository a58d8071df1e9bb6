"""The demo's training pod: the Azure ML documents' code as written (seed 000, then seed 002 with
the sample's vault for the documents' placeholder `my-key-vault`), through the operator's managed
identity endpoint. Prints what it got: the token's claims and the secret's length, never either."""
import base64
import json
import os
import time

# Seed 000 (how to use managed identities on compute clusters), as written in the documents.
from azure.identity import ManagedIdentityCredential

client_id = os.environ.get('DEFAULT_IDENTITY_CLIENT_ID')
credential = ManagedIdentityCredential(client_id=client_id)
token = credential.get_token('https://storage.azure.com/')

payload = token.token.split(".")[1]
claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
print(
    f"pod: ManagedIdentityCredential(client_id=DEFAULT_IDENTITY_CLIENT_ID).get_token('https://storage.azure.com/'): "
    f"a token for {claims['aud']}, identity {claims['oid']}, expires in {(token.expires_on - int(time.time())) // 60} min"
)

# Seed 002 (use a Key Vault secret in training), as written in the documents.
from azure.identity import DefaultAzureCredential
from azure.keyvault.secrets import SecretClient

credential = DefaultAzureCredential()

secret_client = SecretClient(vault_url="https://kv-mlw-team-a.vault.azure.net/", credential=credential)
secret = secret_client.get_secret("secret-name")
print(f"pod: DefaultAzureCredential() + SecretClient.get_secret('secret-name'): {len(secret.value)} characters read")
