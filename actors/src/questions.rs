//! The quiz question bank: validated once at startup, shared read-only by every room.

use crate::config::ConfigError;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Question {
    #[serde(default)]
    pub category: String,
    pub text: String,
    pub choices: Vec<String>,
    /// Index of the correct choice. Never leaves the server before the reveal.
    pub answer: u32,
}

/// One question file: a category and its questions.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuestionFile {
    pub category: String,
    pub questions: Vec<Question>,
}

#[derive(Debug, Clone, Default)]
pub struct QuestionBank {
    questions: Vec<Question>,
}

pub const QUESTION_TEXT_CHARS_MAX: usize = 300;

impl QuestionBank {
    /// Validates `files` (named for error messages) into one bank.
    pub fn from_files(files: Vec<(String, QuestionFile)>) -> Result<QuestionBank, ConfigError> {
        let mut questions = Vec::new();
        let mut texts = std::collections::HashSet::new();
        for (name, file) in files {
            for (index, mut question) in file.questions.into_iter().enumerate() {
                let key = format!("{name}: questions[{index}]");
                let invalid = |reason: &str| ConfigError {
                    key: key.clone(),
                    reason: reason.into(),
                };
                let chars = question.text.chars().count();
                if chars == 0 || chars > QUESTION_TEXT_CHARS_MAX {
                    return Err(invalid("text must have 1 to 300 characters"));
                }
                if !(2..=6).contains(&question.choices.len()) {
                    return Err(invalid("must have 2 to 6 choices"));
                }
                let distinct: std::collections::HashSet<_> = question.choices.iter().collect();
                if distinct.len() != question.choices.len()
                    || question.choices.iter().any(String::is_empty)
                {
                    return Err(invalid("choices must be distinct and non-empty"));
                }
                if question.answer as usize >= question.choices.len() {
                    return Err(invalid("answer must index one of the choices"));
                }
                if !texts.insert(question.text.clone()) {
                    return Err(invalid("the same question text appears twice"));
                }
                question.category = file.category.clone();
                questions.push(question);
            }
        }
        Ok(QuestionBank { questions })
    }

    pub fn len(&self) -> usize {
        self.questions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.questions.is_empty()
    }

    pub fn get(&self, id: u32) -> Option<&Question> {
        self.questions.get(id as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(questions: Vec<Question>) -> Vec<(String, QuestionFile)> {
        vec![(
            "test.toml".into(),
            QuestionFile {
                category: "Test".into(),
                questions,
            },
        )]
    }

    fn question(text: &str, answer: u32) -> Question {
        Question {
            category: String::new(),
            text: text.into(),
            choices: vec!["a".into(), "b".into()],
            answer,
        }
    }

    #[test]
    fn invalid_questions_are_named() {
        let error = QuestionBank::from_files(file(vec![question("ok?", 0), question("bad?", 2)]))
            .expect_err("answer out of range");
        assert_eq!(error.key, "test.toml: questions[1]");
        let error =
            QuestionBank::from_files(file(vec![question("same?", 0), question("same?", 1)]))
                .expect_err("duplicate");
        assert!(error.reason.contains("twice"));
        let bank = QuestionBank::from_files(file(vec![question("fine?", 1)])).expect("valid");
        assert_eq!(bank.get(0).map(|q| q.category.as_str()), Some("Test"));
    }
}
