//! An SDK user who drives `odelt_host` directly (no CLI, no environment variables) validates and runs against the
//! models directory of the executor's configuration: the plugin's combo lists, its validation and its execution
//! all see that one directory.

use std::sync::Arc;

use odelt_host::{Executor, ExecutorConfig, HostDirs, PluginSet, RunError};
use odelt_tests::*;
use serde_json::json;

fn executor_for(plugins: Arc<PluginSet>, models: &std::path::Path, tag: &str) -> Executor {
    let f = fixture();
    Executor::new(
        plugins,
        ExecutorConfig {
            workers: 2,
            models_dir: models.to_path_buf(),
            output_dir: f.out_dir(tag),
            temp_dir: f.temp.clone(),
            ..ExecutorConfig::default()
        },
    )
}

fn small_generate(tag: &str) -> odelt_host::Workflow {
    let mut wf = example("generate.json");
    wf.set("3", "batch_size", json!(2)).unwrap();
    wf.set("4", "class_labels", json!("0,1")).unwrap();
    wf.set("4", "steps", json!(2)).unwrap();
    wf.set("6", "filename_prefix", json!(format!("{tag}/img")))
        .unwrap();
    wf
}

#[test]
fn plugins_loaded_for_another_directory_validate_and_run_against_the_executors() {
    let f = fixture();
    // Loaded with the SDK's defaults ("models" in the working directory, which has no such checkpoint here).
    let mut set = PluginSet::new();
    set.load_file(&plugin_path()).unwrap();
    let set = Arc::new(set);
    assert_eq!(set.host(), &HostDirs::default());
    let loader =
        &set.object_info()["ODEtODElCheckpointLoader"]["input"]["required"]["ckpt_name"][0];
    assert!(
        !loader.to_string().contains("golden-tiny"),
        "the default directory is not the fixture's: {loader}"
    );

    let exec = executor_for(set.clone(), &f.models, "t_sdk_dirs");
    // The executor describes the plugins again for its own directory: the combo lists what is there...
    let ckpts =
        exec.object_info()["ODEtODElCheckpointLoader"]["input"]["required"]["ckpt_name"][0].clone();
    assert!(
        ckpts.to_string().contains(names::FASHION),
        "combo of the executor's models dir: {ckpts}"
    );
    assert_eq!(exec.plugins().host().models_dir, f.models);
    // ...validation accepts the checkpoint that exists only there, and the run opens it.
    let out = run_ok(&exec, &small_generate("t_sdk_dirs"));
    let (shape, _) = tensor_output(&out, "4", 0);
    assert_eq!(shape[0], 2);
}

#[test]
fn an_executor_over_an_empty_models_directory_refuses_the_checkpoint_before_running() {
    let f = fixture();
    let empty = f.root.join("t_sdk_dirs_empty_models");
    std::fs::create_dir_all(&empty).unwrap();
    // The fixture's set was described for the fixture's models; this executor's directory has nothing.
    let exec = executor_for(f.plugins.clone(), &empty, "t_sdk_dirs_empty");
    let (r, _) = run(&exec, &small_generate("t_sdk_dirs_empty"), None);
    match r {
        Err(RunError::Validation(v)) => {
            let text = serde_json::Value::Object(v.node_errors.clone()).to_string();
            assert!(
                text.contains("\"1\"") && text.contains("ckpt_name"),
                "the loader's ckpt_name is refused: {text}"
            );
        }
        Err(e) => panic!("expected a validation failure, got {e}"),
        Ok(_) => panic!("the run used a checkpoint outside the executor's models directory"),
    }
}
