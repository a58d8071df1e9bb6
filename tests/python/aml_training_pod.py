"""A training pod running the Azure ML documents' own code, unmodified, through the operator's
managed identity endpoint. Its only inputs are the ComputeIdentity Secret's keys as environment
(MSI_ENDPOINT, MSI_SECRET, DEFAULT_IDENTITY_CLIENT_ID, AZURE_CLIENT_ID, ...), the pod's trust store
(REQUESTS_CA_BUNDLE) and its DNS (sitecustomize.py); ACCOUNT_URL, CONTAINER and BLOB_NAME say which
blob the job reads. Prints one JSON line: what each step got (hashes, never a token or secret).
"""
import hashlib
import json
import os

result = {}

# Seed 000 (how to use managed identities on compute clusters), as written in the documents.
from azure.identity import ManagedIdentityCredential

client_id = os.environ.get('DEFAULT_IDENTITY_CLIENT_ID')
credential = ManagedIdentityCredential(client_id=client_id)
token = credential.get_token('https://storage.azure.com/')

result["storage_token_expires_on"] = token.expires_on
result["storage_token_sha256"] = hashlib.sha256(token.token.encode()).hexdigest()
result["default_scope_same_token"] = (
    credential.get_token("https://storage.azure.com/.default").token == token.token
)

# The job reads its data with that credential.
from azure.storage.blob import ContainerClient

container = ContainerClient(os.environ["ACCOUNT_URL"], os.environ["CONTAINER"], credential=credential)
result["blob"] = container.download_blob(os.environ["BLOB_NAME"]).readall().decode()

# Seed 002 (use a Key Vault secret in training), as written in the documents.
from azure.identity import DefaultAzureCredential
from azure.keyvault.secrets import SecretClient

credential = DefaultAzureCredential()

secret_client = SecretClient(vault_url="https://my-key-vault.vault.azure.net/", credential=credential)
secret = secret_client.get_secret("secret-name")
result["secret_sha256"] = hashlib.sha256(secret.value.encode()).hexdigest()

print(json.dumps(result))
