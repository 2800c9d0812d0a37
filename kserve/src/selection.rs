//! Which outputs a response carries: the request's `outputs` (or every output of the model, in the model's
//! order), each at most once, each one the model has, and which of them go as binary. A rule of the
//! protocol, so it lives with the protocol's types rather than in the server that applies it.

use std::collections::HashSet;

use crate::body::short;
use crate::{Error, InferRequest};

/// The outputs a response carries, in order, and the names sent with the binary tensor extension.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputSelection {
    /// Output names, in response order.
    pub names: Vec<String>,
    /// The ones to send as binary data.
    pub binary: HashSet<String>,
}

impl InferRequest {
    /// The outputs to return, given the model's output names (`available`, in the model's order).
    pub fn select_outputs(&self, available: &[&str]) -> Result<OutputSelection, Error> {
        let names: Vec<String> = match &self.outputs {
            None => available.iter().map(|n| (*n).to_owned()).collect(),
            Some(list) => {
                let mut seen = HashSet::new();
                for o in list {
                    if !available.contains(&o.name.as_str()) {
                        return Err(Error::UnknownOutput {
                            name: short(&o.name),
                            available: available.join(", "),
                        });
                    }
                    if !seen.insert(o.name.as_str()) {
                        return Err(Error::DuplicateOutput {
                            name: short(&o.name),
                        });
                    }
                }
                list.iter().map(|o| o.name.clone()).collect()
            }
        };
        let mut binary = HashSet::new();
        for name in &names {
            if self.wants_binary_output(name)? {
                binary.insert(name.clone());
            }
        }
        Ok(OutputSelection { names, binary })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn request(json: &str) -> InferRequest {
        InferRequest::decode(json.as_bytes(), None).unwrap()
    }

    #[test]
    fn outputs_are_selected_in_request_order_once_each() {
        let inputs = r#""inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1.0]}]"#;
        let all = request(&format!("{{{inputs}}}"))
            .select_outputs(&["a", "b"])
            .unwrap();
        assert_eq!(all.names, ["a", "b"]);
        assert!(all.binary.is_empty());
        let some = request(&format!(
            r#"{{{inputs},"outputs":[{{"name":"b","parameters":{{"binary_data":true}}}},{{"name":"a"}}]}}"#
        ))
        .select_outputs(&["a", "b"])
        .unwrap();
        assert_eq!(some.names, ["b", "a"]);
        assert_eq!(some.binary, HashSet::from(["b".to_owned()]));
        let err = request(&format!(r#"{{{inputs},"outputs":[{{"name":"c"}}]}}"#))
            .select_outputs(&["a", "b"])
            .unwrap_err()
            .to_string();
        assert_eq!(err, "`c` is not an output of this model (outputs: a, b)");
        let err = request(&format!(
            r#"{{{inputs},"outputs":[{{"name":"a"}},{{"name":"a"}}]}}"#
        ))
        .select_outputs(&["a", "b"])
        .unwrap_err()
        .to_string();
        assert_eq!(err, "output `a` is requested more than once");
    }
}
