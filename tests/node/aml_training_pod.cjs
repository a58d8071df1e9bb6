// A Node training pod running the Azure ML documents' code (seed 000 and seed 002) through the
// operator's managed identity endpoint, with the Azure SDK for JavaScript. Its only inputs are the
// ComputeIdentity Secret's keys as environment (MSI_ENDPOINT, MSI_SECRET,
// DEFAULT_IDENTITY_CLIENT_ID, AZURE_CLIENT_ID, ...), the pod's trust store (NODE_EXTRA_CA_CERTS)
// and its DNS (pod/hosts.cjs); ACCOUNT_URL, CONTAINER and BLOB_NAME say which blob the job reads.
// Prints one JSON line: what each step got (hashes, never a token or secret).
"use strict";
const crypto = require("crypto");
const { ManagedIdentityCredential, DefaultAzureCredential } = require("@azure/identity");
const { ContainerClient } = require("@azure/storage-blob");
const { SecretClient } = require("@azure/keyvault-secrets");

const sha256 = (text) => crypto.createHash("sha256").update(text).digest("hex");

async function main() {
  const result = {};

  // Seed 000: the compute's identity, by DEFAULT_IDENTITY_CLIENT_ID, for storage.
  const credential = new ManagedIdentityCredential({ clientId: process.env.DEFAULT_IDENTITY_CLIENT_ID });
  const token = await credential.getToken("https://storage.azure.com/");
  result.storage_token_expires_on = Math.floor(token.expiresOnTimestamp / 1000);
  result.storage_token_sha256 = sha256(token.token);
  result.default_scope_same_token =
    (await credential.getToken("https://storage.azure.com/.default")).token === token.token;

  // The job reads its data with that credential.
  const container = new ContainerClient(`${process.env.ACCOUNT_URL}/${process.env.CONTAINER}`, credential);
  result.blob = (await container.getBlobClient(process.env.BLOB_NAME).downloadToBuffer()).toString();

  // Seed 002: DefaultAzureCredential and a Key Vault secret.
  const secretClient = new SecretClient("https://my-key-vault.vault.azure.net/", new DefaultAzureCredential());
  const secret = await secretClient.getSecret("secret-name");
  result.secret_sha256 = sha256(secret.value);

  console.log(JSON.stringify(result));
}

main().catch((error) => {
  // The SDK's message names what failed; it carries no token.
  console.error(error && error.message ? error.message : String(error));
  process.exit(1);
});
