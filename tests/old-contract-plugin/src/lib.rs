//! Test fixture: a plugin library built against a frozen copy of an *older* contract
//! (version 0.0.1, a root module with only two entry points). The host must refuse it and
//! name both contract versions.
#![allow(non_camel_case_types)]

use abi_stable::{
    declare_root_module_statics, export_root_module, library::RootModule, package_version_strings,
    prefix_type::PrefixTypeTrait, sabi_extern_fn, sabi_types::VersionStrings, std_types::RString,
    StableAbi,
};

/// The root module as contract 0.0.1 defined it.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginMod_Ref)))]
#[sabi(missing_field(panic))]
pub struct PluginMod {
    /// Plugin name.
    pub name: extern "C" fn() -> RString,
    /// Node descriptors as JSON.
    #[sabi(last_prefix_field)]
    pub node_descriptors: extern "C" fn() -> RString,
}

impl RootModule for PluginMod_Ref {
    declare_root_module_statics! {PluginMod_Ref}
    const BASE_NAME: &'static str = "odelt_plugin";
    const NAME: &'static str = "odelt plugin contract";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}

#[sabi_extern_fn]
fn name() -> RString {
    RString::from("odelt-old-contract-plugin")
}

#[sabi_extern_fn]
fn node_descriptors() -> RString {
    RString::from(r#"{"OldNode": {}}"#)
}

/// Exports the old root module.
#[export_root_module]
pub fn root() -> PluginMod_Ref {
    PluginMod {
        name,
        node_descriptors,
    }
    .leak_into_prefix()
}
