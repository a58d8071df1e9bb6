//! ARM ids of the Azure Machine Learning resources the operator reads and writes.

/// A workspace.
pub fn workspace(subscription: &str, resource_group: &str, name: &str) -> String {
    format!(
        "/subscriptions/{subscription}/resourceGroups/{resource_group}/providers/Microsoft.MachineLearningServices/workspaces/{name}"
    )
}

/// A compute of the workspace at `workspace`.
pub fn compute(workspace: &str, name: &str) -> String {
    format!("{workspace}/computes/{name}")
}

/// A datastore of the workspace at `workspace`.
pub fn datastore(workspace: &str, name: &str) -> String {
    format!("{workspace}/datastores/{name}")
}

/// A connection of the workspace at `workspace`.
pub fn connection(workspace: &str, name: &str) -> String {
    format!("{workspace}/connections/{name}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn children_hang_below_their_workspace() {
        let ws = super::workspace("sub", "rg", "mlw");
        assert_eq!(
            ws,
            "/subscriptions/sub/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/mlw"
        );
        assert_eq!(super::compute(&ws, "cpu"), format!("{ws}/computes/cpu"));
        assert_eq!(super::datastore(&ws, "d"), format!("{ws}/datastores/d"));
        assert_eq!(super::connection(&ws, "c"), format!("{ws}/connections/c"));
    }
}
