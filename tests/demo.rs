//! The README's first command: `hack/demo.sh` (what `make demo` runs) brings up its own control
//! plane and emulator, applies deploy/samples, and every valid sample reaches Ready=True with the
//! Secrets and ConfigMap it promises; the invalid example is reported as such; and a restart of the
//! settled operator writes nothing to ARM or the API server and mints nothing.

use std::process::Command;

#[test]
fn the_demo_shows_every_sample_ready_with_its_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/hack/demo.sh"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        // Its own control plane, apart from the one the other tests share.
        .env("AMLID_CLUSTER_DIR", dir.path().join("cluster"))
        .env_remove("DEMO_KEEP")
        // A few Datastores timed, as `make bench-datastores` times 500 with release builds.
        .env("DEMO_BENCH_N", "20")
        .output()
        .expect("the demo runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for object in [
        "AzureCredential/team-a",
        "ClusterAzureCredential/aml-platform",
        "Workspace/ml-workspace",
        "ComputeIdentity/cpu-cluster",
        "Datastore/training-data",
        "RegistryConnection/workspace-registry",
        "RegistryConnection/shared-registry",
        "Datastore/shared-files",
    ] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(object) && l.contains(" Ready=True ")),
            "{object} is not Ready:\n{stdout}"
        );
    }
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("Workspace/workspace-primary-not-listed")
                && l.contains("Ready=False InvalidSpec")),
        "{stdout}"
    );
    // The second namespace: its own workspace through the shared credential, and an object that
    // names team-a's identity refused before any Azure call.
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("Workspace/team-b-workspace [team-b] Ready=True")),
        "{stdout}"
    );
    assert!(
        stdout.lines().any(|l| l
            .starts_with("ComputeIdentity/borrowed-identity [team-b] Ready=False OutOfScope")
            && l.contains("rg-aml-team-a")
            && l.contains("spec.identity.userAssignedIdentities[0]")),
        "{stdout}"
    );
    // The plugin, as kubectl runs it from the PATH.
    for shown in [
        "ComputeIdentity cpu-cluster in team-a: Ready=True (TokensIssued)",
        "spec.workspaceRef -> Workspace/team-a/ml-workspace: True",
        "cpu-cluster-identity (Opaque), expires in",
        "Written by: ComputeIdentity/cpu-cluster",
        "aud: https://storage.azure.com",
    ] {
        assert!(stdout.contains(shown), "{shown} not in:\n{stdout}");
    }
    // The documents' training code through the managed identity endpoint, in a pod-shaped process.
    for shown in [
        "pod: ManagedIdentityCredential(client_id=DEFAULT_IDENTITY_CLIENT_ID).get_token('https://storage.azure.com/'): a token for https://storage.azure.com, identity ",
        "pod: DefaultAzureCredential() + SecretClient.get_secret('secret-name'): 45 characters read",
    ] {
        assert!(stdout.contains(shown), "{shown} not in:\n{stdout}");
    }
    // A restart of the settled operator, with every kind present, costs nothing: counted at the
    // emulator and in the resourceVersions of what the operator writes.
    assert!(
        stdout.contains("the restarted operator reconciled all"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "after a restart: 0 ARM writes, 0 tokens minted for pods, 0 ACR exchanges, \
             0 Secret/ConfigMap/ServiceAccount writes"
        ),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("operator: 20 Datastores Ready in ")
                && l.contains("ms per object")),
        "{stdout}"
    );
    for output in [
        "secret/cpu-cluster-identity",
        "secret/training-data-access",
        "secret/workspace-registry-pull",
        "secret/shared-registry-pull",
        "configmap/aml-workspace-config",
    ] {
        assert!(stdout.contains(output), "{output} missing:\n{stdout}");
    }
}
