//! Finding and loading plugin libraries; the catalog of the nodes they provide.
//!
//! Libraries are loaded with `abi_stable::library::lib_header_from_path(..).init_root_module()`
//! (safe for several plugins of the same contract side by side) and are never unloaded.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use abi_stable::library::{lib_header_from_path, LibraryError};
use abi_stable::std_types::{RSlice, RStr};
use odelt_contract::{
    ExecContext, HostContext, NamedValue, NodeError, NodeInfo, NodeOutput, PluginMod_Ref,
    ValidationIssue, CONTRACT_VERSION,
};

use crate::dirs::{HostDirs, HostStrings};
use serde_json::{Map, Value as Json};

/// Why a plugin could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The path does not exist.
    #[error("plugin not found: {0}")]
    NotFound(PathBuf),
    /// The file is not a shared library, or has no odelt root module.
    #[error("{path}: not an odelt plugin ({reason})")]
    NotAPlugin {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// The plugin was built against a contract this host cannot use.
    #[error("{path}: incompatible plugin: built against odelt contract {plugin_version}, this host uses contract {host_version}{detail}")]
    Incompatible {
        /// The file.
        path: PathBuf,
        /// The host's contract version.
        host_version: String,
        /// The plugin's contract version.
        plugin_version: String,
        /// Extra explanation (e.g. a layout difference).
        detail: String,
    },
    /// The plugin loaded but failed to describe its nodes.
    #[error("{path}: plugin failed to initialise: {message}")]
    PluginFailed {
        /// The file.
        path: PathBuf,
        /// The plugin's error.
        message: String,
    },
    /// Two plugins register the same node class.
    #[error("node '{node}' is registered by two plugins: {first} and {second}")]
    DuplicateNode {
        /// The class type.
        node: String,
        /// The plugin that registered it first.
        first: PathBuf,
        /// The plugin that tried to register it again.
        second: PathBuf,
    },
    /// A directory could not be read.
    #[error("reading plugin directory {path}: {source}")]
    Io {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// A loaded plugin library.
pub struct LoadedPlugin {
    path: PathBuf,
    name: String,
    version: String,
    contract_version: String,
    module: PluginMod_Ref,
    nodes: Vec<Arc<NodeInfo>>,
}

impl fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("path", &self.path)
            .field("name", &self.name)
            .field("version", &self.version)
            .field("contract_version", &self.contract_version)
            .field("nodes", &self.nodes.len())
            .finish()
    }
}

impl LoadedPlugin {
    /// Loads one plugin library and reads its node descriptors for a default host
    /// ([`HostDirs::default`]).
    pub fn load(path: &Path) -> Result<LoadedPlugin, LoadError> {
        Self::load_for(path, &HostDirs::default())
    }

    /// Loads one plugin library and reads its node descriptors for `host`.
    pub fn load_for(path: &Path, host: &HostDirs) -> Result<LoadedPlugin, LoadError> {
        if !path.exists() {
            return Err(LoadError::NotFound(path.to_path_buf()));
        }
        if path.is_dir() {
            return Err(LoadError::NotAPlugin {
                path: path.to_path_buf(),
                reason: "is a directory".into(),
            });
        }
        let header = lib_header_from_path(path).map_err(|e| classify(path, e, None))?;
        let plugin_contract = header.version_strings().to_string();
        let module = header
            .init_root_module::<PluginMod_Ref>()
            .map_err(|e| classify(path, e, Some(&plugin_contract)))?;
        let info = (module.plugin_info())();
        let mut plugin = LoadedPlugin {
            path: path.to_path_buf(),
            name: info.name.into_string(),
            version: info.version.into_string(),
            contract_version: plugin_contract,
            module,
            nodes: Vec::new(),
        };
        plugin.nodes = plugin.describe(&HostStrings::of(host))?;
        Ok(plugin)
    }

    /// The same library described for another host (the handle is shared, nothing reloads).
    pub fn for_host(&self, host: &HostDirs) -> Result<LoadedPlugin, LoadError> {
        Ok(LoadedPlugin {
            path: self.path.clone(),
            name: self.name.clone(),
            version: self.version.clone(),
            contract_version: self.contract_version.clone(),
            module: self.module,
            nodes: self.describe(&HostStrings::of(host))?,
        })
    }

    fn describe(&self, host: &HostStrings) -> Result<Vec<Arc<NodeInfo>>, LoadError> {
        let path = &self.path;
        let failed = |message: String| LoadError::PluginFailed {
            path: path.to_path_buf(),
            message,
        };
        let json = (self.module.node_descriptors())(&host.context())
            .into_result()
            .map_err(|e| failed(e.message.into_string()))?;
        let map: Map<String, Json> = serde_json::from_str(json.as_str())
            .map_err(|e| failed(format!("node descriptors are not a JSON object: {e}")))?;
        let mut nodes = Vec::with_capacity(map.len());
        for (class, v) in map {
            let node: NodeInfo = serde_json::from_value(v)
                .map_err(|e| failed(format!("descriptor of node '{class}': {e}")))?;
            if node.name != class {
                return Err(failed(format!(
                    "descriptor key '{class}' differs from its name '{}'",
                    node.name
                )));
            }
            node.check().map_err(failed)?;
            nodes.push(Arc::new(node));
        }
        Ok(nodes)
    }

    /// The library's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The plugin's version.
    pub fn version(&self) -> &str {
        &self.version
    }
    /// The contract version the plugin was built against.
    pub fn contract_version(&self) -> &str {
        &self.contract_version
    }
    /// The nodes it provides.
    pub fn nodes(&self) -> &[Arc<NodeInfo>] {
        &self.nodes
    }

    /// Calls the plugin's `execute` entry point.
    pub fn execute(
        &self,
        class_type: &str,
        inputs: &[NamedValue],
        ctx: &ExecContext<'_>,
    ) -> Result<NodeOutput, NodeError> {
        (self.module.execute())(RStr::from_str(class_type), RSlice::from_slice(inputs), ctx)
            .into_result()
    }

    /// Calls the plugin's `validate` entry point with the inputs of a node (literals and
    /// described links) and the host the run will use.
    pub fn validate(
        &self,
        class_type: &str,
        literal_inputs: &Map<String, Json>,
        host: &HostContext<'_>,
    ) -> Result<Vec<ValidationIssue>, NodeError> {
        let json = Json::Object(literal_inputs.clone()).to_string();
        (self.module.validate())(RStr::from_str(class_type), RStr::from_str(&json), host)
            .into_result()
            .map(|v| v.into_vec())
    }

    /// Asks the plugin to free memory it keeps (model caches).
    pub fn free_memory(&self, unload_models: bool) -> Result<(), NodeError> {
        (self.module.free_memory())(unload_models).into_result()
    }
}

fn classify(path: &Path, e: LibraryError, plugin_contract: Option<&str>) -> LoadError {
    let path = path.to_path_buf();
    match e {
        LibraryError::OpenError { err, .. } => LoadError::NotAPlugin {
            path,
            reason: format!("cannot open as a shared library: {err}"),
        },
        LibraryError::GetSymbolError { .. } => LoadError::NotAPlugin {
            path,
            reason: "no abi_stable root module exported".into(),
        },
        LibraryError::InvalidAbiHeader(h) => LoadError::NotAPlugin {
            path,
            reason: format!("incompatible abi_stable header {h:?}"),
        },
        LibraryError::IncompatibleVersionNumber {
            expected_version,
            actual_version,
            ..
        } => LoadError::Incompatible {
            path,
            host_version: expected_version.to_string(),
            plugin_version: actual_version.to_string(),
            detail: String::new(),
        },
        LibraryError::ParseVersionError(v) => LoadError::Incompatible {
            path,
            host_version: CONTRACT_VERSION.to_string(),
            plugin_version: plugin_contract.unwrap_or("?").to_string(),
            detail: format!(" (unparsable version: {v})"),
        },
        LibraryError::AbiInstability(err) => {
            let text = err.to_string();
            let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
            LoadError::Incompatible {
                path,
                host_version: CONTRACT_VERSION.to_string(),
                plugin_version: plugin_contract.unwrap_or("?").to_string(),
                detail: format!(" (the root module layouts differ: {})", first.trim()),
            }
        }
        LibraryError::RootModule { err, .. } => LoadError::PluginFailed {
            path,
            message: err.to_string().trim().to_string(),
        },
        other => LoadError::NotAPlugin {
            path,
            reason: other.to_string().trim().to_string(),
        },
    }
}

/// Where a node class comes from.
#[derive(Clone, Debug)]
pub struct NodeEntry {
    /// Index of the plugin in [`PluginSet::plugins`].
    pub plugin: usize,
    /// Its descriptor.
    pub info: Arc<NodeInfo>,
}

/// Every loaded plugin and the node classes they provide, described for one host
/// ([`HostDirs`]: the directories their combo lists and validation read).
#[derive(Debug)]
pub struct PluginSet {
    host: HostDirs,
    host_strings: HostStrings,
    plugins: Vec<LoadedPlugin>,
    nodes: HashMap<String, NodeEntry>,
    order: Vec<String>,
    loaded_paths: HashSet<PathBuf>,
    warnings: Vec<String>,
}

/// The platform's shared-library file extension (`so`, `dylib`, `dll`).
pub const LIBRARY_EXTENSION: &str = std::env::consts::DLL_EXTENSION;

impl Default for PluginSet {
    fn default() -> Self {
        Self::for_host(HostDirs::default())
    }
}

impl PluginSet {
    /// An empty set for a default host ([`HostDirs::default`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty set whose plugins are described for `host`.
    pub fn for_host(host: HostDirs) -> Self {
        PluginSet {
            host_strings: HostStrings::of(&host),
            host,
            plugins: Vec::new(),
            nodes: HashMap::new(),
            order: Vec::new(),
            loaded_paths: HashSet::new(),
            warnings: Vec::new(),
        }
    }

    /// The host the plugins are described for.
    pub fn host(&self) -> &HostDirs {
        &self.host
    }

    /// The host as the contract's context (what validation hooks receive).
    pub fn host_context(&self) -> HostContext<'_> {
        self.host_strings.context()
    }

    /// The same plugins described for another host: combo lists and validation then read
    /// `host`'s directories. Nothing is reloaded.
    pub fn with_host(&self, host: HostDirs) -> Result<PluginSet, LoadError> {
        let mut set = PluginSet::for_host(host);
        for p in &self.plugins {
            set.add(p.for_host(&set.host)?)?;
        }
        set.loaded_paths = self.loaded_paths.clone();
        set.warnings = self.warnings.clone();
        Ok(set)
    }

    /// Loads a plugin file, or every plugin in a directory ([`PluginSet::load_dir`]).
    pub fn load(&mut self, path: &Path) -> Result<usize, LoadError> {
        if path.is_dir() {
            self.load_dir(path)
        } else {
            self.load_file(path).map(|_| 1)
        }
    }

    /// Loads one plugin file; errors on anything that is not a compatible plugin and on node
    /// names another loaded plugin already registers. Loading the same file twice is a no-op.
    pub fn load_file(&mut self, path: &Path) -> Result<(), LoadError> {
        let canon = path
            .canonicalize()
            .map_err(|_| LoadError::NotFound(path.to_path_buf()))?;
        if self.loaded_paths.contains(&canon) {
            return Ok(());
        }
        let plugin = LoadedPlugin::load_for(path, &self.host)?;
        self.add(plugin)?;
        self.loaded_paths.insert(canon);
        Ok(())
    }

    /// Loads every shared library in `dir` (sorted by name). Libraries without an odelt root
    /// module are skipped silently, incompatible or failing plugins are skipped with a
    /// warning ([`PluginSet::warnings`]); duplicate node names are an error.
    /// Returns how many plugins were loaded.
    pub fn load_dir(&mut self, dir: &Path) -> Result<usize, LoadError> {
        let rd = std::fs::read_dir(dir).map_err(|source| LoadError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let mut files: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == LIBRARY_EXTENSION))
            .collect();
        files.sort();
        let mut n = 0;
        for f in files {
            match self.load_file(&f) {
                Ok(()) => n += 1,
                Err(LoadError::NotAPlugin { .. }) => {}
                Err(e @ (LoadError::Incompatible { .. } | LoadError::PluginFailed { .. })) => {
                    self.warnings.push(format!("skipped {e}"))
                }
                Err(e) => return Err(e),
            }
        }
        Ok(n)
    }

    fn add(&mut self, plugin: LoadedPlugin) -> Result<(), LoadError> {
        let mut seen = HashSet::new();
        for n in plugin.nodes() {
            if let Some(existing) = self.nodes.get(&n.name) {
                return Err(LoadError::DuplicateNode {
                    node: n.name.clone(),
                    first: self.plugins[existing.plugin].path.clone(),
                    second: plugin.path.clone(),
                });
            }
            if !seen.insert(n.name.clone()) {
                return Err(LoadError::PluginFailed {
                    path: plugin.path.clone(),
                    message: format!("node '{}' described twice", n.name),
                });
            }
        }
        let idx = self.plugins.len();
        for n in plugin.nodes() {
            self.order.push(n.name.clone());
            self.nodes.insert(
                n.name.clone(),
                NodeEntry {
                    plugin: idx,
                    info: n.clone(),
                },
            );
        }
        self.plugins.push(plugin);
        Ok(())
    }

    /// The loaded plugins, in load order.
    pub fn plugins(&self) -> &[LoadedPlugin] {
        &self.plugins
    }

    /// Looks a node class up.
    pub fn node(&self, class_type: &str) -> Option<&NodeEntry> {
        self.nodes.get(class_type)
    }

    /// All node class names, in load order.
    pub fn node_names(&self) -> &[String] {
        &self.order
    }

    /// Problems met while scanning directories (skipped plugins).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The `/object_info` JSON for every loaded node.
    pub fn object_info(&self) -> Json {
        let mut m = Map::new();
        for name in &self.order {
            if let Some(e) = self.nodes.get(name) {
                m.insert(
                    name.clone(),
                    serde_json::to_value(&*e.info).unwrap_or(Json::Null),
                );
            }
        }
        Json::Object(m)
    }
}

/// Where to look for plugins.
#[derive(Clone, Debug, Default)]
pub struct PluginSearch {
    /// Explicit files or directories; when non-empty, nothing else is searched.
    pub explicit: Vec<PathBuf>,
    /// Search the directory of the running executable (default discovery).
    pub exe_dir: bool,
    /// Entries of `ODELT_PLUGIN_PATH` (colon-separated files or directories).
    pub env_path: Option<String>,
}

impl PluginSearch {
    /// The default search: explicit paths if any, else the executable's directory, then
    /// `ODELT_PLUGIN_PATH`.
    pub fn from_env(explicit: Vec<PathBuf>) -> Self {
        PluginSearch {
            explicit,
            exe_dir: true,
            env_path: std::env::var("ODELT_PLUGIN_PATH").ok(),
        }
    }

    /// The paths this search will try, in order.
    pub fn paths(&self) -> Vec<PathBuf> {
        if !self.explicit.is_empty() {
            return self.explicit.clone();
        }
        let mut out = Vec::new();
        if self.exe_dir {
            if let Some(dir) = std::env::current_exe()
                .ok()
                .and_then(|p| p.parent().map(Path::to_path_buf))
            {
                out.push(dir);
            }
        }
        if let Some(p) = &self.env_path {
            out.extend(
                p.split(':')
                    .filter(|s| !s.trim().is_empty())
                    .map(PathBuf::from),
            );
        }
        out
    }

    /// Loads the plugins for a default host ([`HostDirs::default`]); see
    /// [`PluginSearch::load_for`].
    pub fn load(&self) -> Result<PluginSet, LoadError> {
        self.load_for(HostDirs::default())
    }

    /// Loads the plugins, described for `host`. Explicit paths must exist and be plugins (or
    /// directories); discovered ones that don't exist are skipped with a warning.
    pub fn load_for(&self, host: HostDirs) -> Result<PluginSet, LoadError> {
        let mut set = PluginSet::for_host(host);
        let explicit = !self.explicit.is_empty();
        for p in self.paths() {
            if !explicit && !p.exists() {
                set.warnings
                    .push(format!("plugin path {} does not exist", p.display()));
                continue;
            }
            set.load(&p)?;
        }
        Ok(set)
    }
}
