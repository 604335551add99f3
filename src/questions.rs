//! Loading the quiz question bank: the files embedded from `config/questions/`, or every
//! `*.toml` file of `quiz.questions_dir`.

use figment::Figment;
use figment::providers::{Format, Toml};
use playtree_actors::questions::{QuestionBank, QuestionFile};
use std::path::Path;

const EMBEDDED: &[(&str, &str)] = &[
    (
        "general.toml",
        include_str!("../config/questions/general.toml"),
    ),
    (
        "geography.toml",
        include_str!("../config/questions/geography.toml"),
    ),
    (
        "history.toml",
        include_str!("../config/questions/history.toml"),
    ),
    (
        "science.toml",
        include_str!("../config/questions/science.toml"),
    ),
];

#[derive(Debug, thiserror::Error)]
pub enum QuestionsError {
    #[error("reading question files in {dir}: {source}")]
    Read { dir: String, source: std::io::Error },
    #[error("question file {file}: {reason}")]
    Parse { file: String, reason: String },
    #[error("invalid question bank: {0}")]
    Invalid(#[from] playtree_actors::config::ConfigError),
    #[error("the question bank in {0} has no questions")]
    Empty(String),
}

fn parse(name: &str, text: &str) -> Result<QuestionFile, QuestionsError> {
    Figment::from(Toml::string(text))
        .extract()
        .map_err(|error| QuestionsError::Parse {
            file: name.to_owned(),
            reason: error.to_string(),
        })
}

/// The bank named by `questions_dir`, or the embedded one when it is empty.
pub fn load(questions_dir: &str) -> Result<QuestionBank, QuestionsError> {
    let files = if questions_dir.is_empty() {
        EMBEDDED
            .iter()
            .map(|(name, text)| Ok(((*name).to_owned(), parse(name, text)?)))
            .collect::<Result<Vec<_>, QuestionsError>>()?
    } else {
        let dir = Path::new(questions_dir);
        let read_error = |source| QuestionsError::Read {
            dir: questions_dir.to_owned(),
            source,
        };
        let mut paths: Vec<_> = std::fs::read_dir(dir)
            .map_err(read_error)?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
            .collect();
        paths.sort();
        let mut files = Vec::with_capacity(paths.len());
        for path in paths {
            let text = std::fs::read_to_string(&path).map_err(read_error)?;
            let name = path.display().to_string();
            files.push((name.clone(), parse(&name, &text)?));
        }
        files
    };
    let bank = QuestionBank::from_files(files)?;
    if bank.is_empty() {
        return Err(QuestionsError::Empty(questions_dir.to_owned()));
    }
    Ok(bank)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_embedded_bank_has_sixty_valid_questions_in_four_categories() {
        let bank = super::load("").expect("embedded bank is valid");
        assert!(bank.len() >= 60, "{} questions", bank.len());
        let categories: std::collections::BTreeSet<String> = (0..bank.len() as u32)
            .filter_map(|id| bank.get(id).map(|q| q.category.clone()))
            .collect();
        assert_eq!(categories.len(), 4, "{categories:?}");
    }

    #[test]
    fn a_bad_file_is_named() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(
            dir.path().join("broken.toml"),
            "category = \"X\"\n[[questions]]\ntext = \"?\"\nchoices = [\"a\", \"b\"]\nanswer = 5\n",
        )
        .expect("write");
        let error = super::load(dir.path().to_str().expect("utf-8")).expect_err("invalid");
        assert!(error.to_string().contains("broken.toml"), "{error}");
    }
}
