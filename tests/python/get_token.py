"""Gets a token the way training code does, with the official azure-identity.

usage: get_token.py secret|imds SCOPE
  secret: ClientSecretCredential from AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_CLIENT_SECRET and
          AZURE_AUTHORITY_HOST (the emulator), trusting REQUESTS_CA_BUNDLE.
  imds:   ManagedIdentityCredential (client_id from AZURE_CLIENT_ID when set) through the IMDS at
          AZURE_POD_IDENTITY_AUTHORITY_HOST.
Prints {"token": ..., "expires_on": ...} on success; the error class and message otherwise (exit 1).
"""
import json
import os
import sys

from azure.identity import ClientSecretCredential, ManagedIdentityCredential

mode, scope = sys.argv[1], sys.argv[2]
try:
    if mode == "secret":
        credential = ClientSecretCredential(
            os.environ["AZURE_TENANT_ID"],
            os.environ["AZURE_CLIENT_ID"],
            os.environ["AZURE_CLIENT_SECRET"],
            authority=os.environ["AZURE_AUTHORITY_HOST"],
            disable_instance_discovery=True,
        )
    else:
        credential = ManagedIdentityCredential(client_id=os.environ.get("AZURE_CLIENT_ID"))
    token = credential.get_token(scope)
    print(json.dumps({"token": token.token, "expires_on": token.expires_on}))
except Exception as error:  # the test reads the class and message
    print(f"{type(error).__name__}: {error}")
    sys.exit(1)
