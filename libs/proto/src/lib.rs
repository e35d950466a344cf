//! The generated gRPC code for Trickle's four contracts, and the descriptor set the servers
//! expose through reflection. The `.proto` files live in the repository's `proto/` folder.

#![allow(missing_debug_implementations, clippy::all, clippy::pedantic)]

/// The encoded `FileDescriptorSet` of every Trickle proto, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("trickle_descriptor");

pub mod auth {
    pub mod v1 {
        tonic::include_proto!("trickle.auth.v1");
    }
}

pub mod userstore {
    pub mod v1 {
        tonic::include_proto!("trickle.userstore.v1");
    }
}

pub mod legacy {
    pub mod v1 {
        tonic::include_proto!("trickle.legacy.v1");
    }
}

pub mod migration {
    pub mod v1 {
        tonic::include_proto!("trickle.migration.v1");
    }
}

/// Every RPC of every Trickle contract as its HTTP/2 path (`/trickle.auth.v1.AuthService/Login`),
/// for metric labels that cannot be made up by a caller.
pub fn method_paths() -> std::collections::HashSet<String> {
    use prost::Message as _;
    let Ok(set) = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET) else {
        return std::collections::HashSet::new();
    };
    let mut paths = std::collections::HashSet::new();
    for file in &set.file {
        for service in &file.service {
            for method in &service.method {
                paths.insert(format!(
                    "/{}.{}/{}",
                    file.package(),
                    service.name(),
                    method.name()
                ));
            }
        }
    }
    paths
}
