//! The JNI bridge that exposes the Sextant runtime to Android apps (with a Java API and a Gradle
//! module beside it). Nothing is implemented yet.
