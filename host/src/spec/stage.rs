//! The stages of a round and the types of a job's conditions, as Sedna names them.

use std::fmt;
use std::str::FromStr;

/// Declares a fieldless enum whose variants are written as Sedna writes them.
macro_rules! named {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant),*
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),*];

            pub fn name(self) -> &'static str {
                match self {
                    $($name::$variant => stringify!($variant)),*
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }

        /// Written as its name, as Sedna writes it.
        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.name())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }

        impl FromStr for $name {
            type Err = String;

            fn from_str(text: &str) -> Result<Self, String> {
                Self::ALL
                    .iter()
                    .copied()
                    .find(|v| v.name() == text)
                    .ok_or_else(|| {
                        let names: Vec<&str> = Self::ALL.iter().map(|v| v.name()).collect();
                        format!(
                            "{text:?} is not a {}: one of {}",
                            stringify!($name),
                            names.join(", ")
                        )
                    })
            }
        }
    };
}

named!(
    /// A stage of a round.
    Stage {
        Train,
        Eval,
        Deploy,
    }
);

named!(
    /// What a condition says of its stage (Sedna's condition `type`).
    ConditionType {
        /// Waiting for the train trigger.
        Waiting,
        /// The stage may start: its inputs are written.
        Ready,
        /// Its worker is being started.
        Starting,
        Running,
        Completed,
        Failed,
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_an_unknown_one_lists_the_known() {
        for stage in Stage::ALL {
            assert_eq!(stage.name().parse::<Stage>(), Ok(*stage));
        }
        for kind in ConditionType::ALL {
            assert_eq!(kind.to_string().parse::<ConditionType>(), Ok(*kind));
        }
        let error = "Training".parse::<Stage>().unwrap_err();
        assert!(error.contains("Train, Eval, Deploy"), "{error}");
        assert_eq!(serde_json::to_string(&Stage::Eval).unwrap(), "\"Eval\"");
        assert_eq!(
            serde_json::from_str::<ConditionType>("\"Failed\"").unwrap(),
            ConditionType::Failed
        );
        assert!(serde_json::from_str::<Stage>("\"Later\"").is_err());
    }
}
